"""The words of every mail, per locale: English (the fallback), German and French.

A mail is a subject, paragraphs, and at most one action (a one-time link, with its code for
entry in the app). Paragraphs are ``str.format`` templates over the mail's values; nothing
in them is HTML (the HTML part escapes every value). No mail carries a secret other than its
one-time link and code.
"""

from dataclasses import dataclass
from enum import StrEnum


class MailKind(StrEnum):
    """What a mail is about."""

    VERIFY_EMAIL = "verify_email"
    PASSWORD_RESET = "password_reset"  # noqa: S105  # a mail's name, not a password
    PASSWORD_CHANGED = "password_changed"  # noqa: S105
    EMAIL_CHANGE = "email_change"
    EMAIL_CHANGED = "email_changed"
    ACCOUNT_DELETED = "account_deleted"


@dataclass(frozen=True)
class MailText:
    """One mail in one language: ``paragraphs`` and ``action`` (the link's label) are
    ``str.format`` templates over the values the sender gives."""

    subject: str
    paragraphs: tuple[str, ...]
    action: str | None = None


_EN = {
    MailKind.VERIFY_EMAIL: MailText(
        "Confirm your email address for {app}",
        (
            "Confirm that this address is yours by opening the link below, or by entering"
            " this code in the app: {code}",
            "The link and the code work once, for {hours} hours. If you did not create an"
            " account, ignore this mail.",
        ),
        "Confirm my address",
    ),
    MailKind.PASSWORD_RESET: MailText(
        "Reset your {app} password",
        (
            "Someone asked to reset the password of your account. To choose a new password,"
            " open the link below, or enter this code in the app: {code}",
            "The link and the code work once, for {minutes} minutes. If you did not ask,"
            " ignore this mail: your password stays as it is.",
        ),
        "Choose a new password",
    ),
    MailKind.PASSWORD_CHANGED: MailText(
        "Your {app} password was changed",
        (
            "The password of your account was changed, and your other devices were signed out.",
            "If this was not you, reset your password now and contact support.",
        ),
    ),
    MailKind.EMAIL_CHANGE: MailText(
        "Confirm your new email address for {app}",
        (
            "Your account asked to use this address from now on. Confirm it by opening the"
            " link below, or by entering this code in the app: {code}",
            "The link and the code work once, for {hours} hours. Until then, your account"
            " keeps its current address. If you did not ask, ignore this mail.",
        ),
        "Confirm my new address",
    ),
    MailKind.EMAIL_CHANGED: MailText(
        "The email address of your {app} account was changed",
        (
            "Your account now uses another address: {masked_email}. Mail about your account"
            " goes there from now on.",
            "If this was not you, open the link below within {days} days: it gives your"
            " account this address back and signs out every device.",
        ),
        "This was not me: undo the change",
    ),
    MailKind.ACCOUNT_DELETED: MailText(
        "Your {app} account was deleted",
        (
            "Your account and its data were deleted, and every device was signed out.",
            "If this was not you, contact support.",
        ),
    ),
}

_DE = {
    MailKind.VERIFY_EMAIL: MailText(
        "Bestätigen Sie Ihre E-Mail-Adresse für {app}",
        (
            "Bestätigen Sie, dass diese Adresse Ihnen gehört: Öffnen Sie den Link unten oder"
            " geben Sie diesen Code in der App ein: {code}",
            "Link und Code gelten einmal, {hours} Stunden lang. Wenn Sie kein Konto angelegt"
            " haben, ignorieren Sie diese E-Mail.",
        ),
        "Adresse bestätigen",
    ),
    MailKind.PASSWORD_RESET: MailText(
        "Ihr Passwort für {app} zurücksetzen",
        (
            "Jemand möchte das Passwort Ihres Kontos zurücksetzen. Um ein neues Passwort zu"
            " wählen, öffnen Sie den Link unten oder geben Sie diesen Code in der App ein:"
            " {code}",
            "Link und Code gelten einmal, {minutes} Minuten lang. Wenn Sie das nicht waren,"
            " ignorieren Sie diese E-Mail: Ihr Passwort bleibt, wie es ist.",
        ),
        "Neues Passwort wählen",
    ),
    MailKind.PASSWORD_CHANGED: MailText(
        "Ihr Passwort für {app} wurde geändert",
        (
            "Das Passwort Ihres Kontos wurde geändert, und Ihre anderen Geräte wurden abgemeldet.",
            "Wenn Sie das nicht waren, setzen Sie Ihr Passwort sofort zurück und wenden Sie"
            " sich an den Support.",
        ),
    ),
    MailKind.EMAIL_CHANGE: MailText(
        "Bestätigen Sie Ihre neue E-Mail-Adresse für {app}",
        (
            "Ihr Konto soll künftig diese Adresse verwenden. Bestätigen Sie sie über den Link"
            " unten oder mit diesem Code in der App: {code}",
            "Link und Code gelten einmal, {hours} Stunden lang. Bis dahin behält Ihr Konto"
            " seine bisherige Adresse. Wenn Sie das nicht waren, ignorieren Sie diese E-Mail.",
        ),
        "Neue Adresse bestätigen",
    ),
    MailKind.EMAIL_CHANGED: MailText(
        "Die E-Mail-Adresse Ihres Kontos bei {app} wurde geändert",
        (
            "Ihr Konto verwendet jetzt eine andere Adresse: {masked_email}. E-Mails zu Ihrem"
            " Konto gehen ab jetzt dorthin.",
            "Wenn Sie das nicht waren, öffnen Sie innerhalb von {days} Tagen den Link unten:"
            " Ihr Konto erhält diese Adresse zurück, und alle Geräte werden abgemeldet.",
        ),
        "Das war ich nicht: Änderung rückgängig machen",
    ),
    MailKind.ACCOUNT_DELETED: MailText(
        "Ihr Konto bei {app} wurde gelöscht",
        (
            "Ihr Konto und seine Daten wurden gelöscht, und alle Geräte wurden abgemeldet.",
            "Wenn Sie das nicht waren, wenden Sie sich an den Support.",
        ),
    ),
}

_FR = {
    MailKind.VERIFY_EMAIL: MailText(
        "Confirmez votre adresse e-mail pour {app}",
        (
            "Confirmez que cette adresse est la vôtre en ouvrant le lien ci-dessous, ou en"
            " saisissant ce code dans l'application : {code}",
            "Le lien et le code servent une fois, pendant {hours} heures. Si vous n'avez pas"
            " créé de compte, ignorez ce message.",
        ),
        "Confirmer mon adresse",
    ),
    MailKind.PASSWORD_RESET: MailText(
        "Réinitialisez votre mot de passe {app}",
        (
            "Quelqu'un a demandé à réinitialiser le mot de passe de votre compte. Pour en"
            " choisir un nouveau, ouvrez le lien ci-dessous, ou saisissez ce code dans"
            " l'application : {code}",
            "Le lien et le code servent une fois, pendant {minutes} minutes. Si ce n'était"
            " pas vous, ignorez ce message : votre mot de passe ne change pas.",
        ),
        "Choisir un nouveau mot de passe",
    ),
    MailKind.PASSWORD_CHANGED: MailText(
        "Votre mot de passe {app} a été modifié",
        (
            "Le mot de passe de votre compte a été modifié, et vos autres appareils ont été"
            " déconnectés.",
            "Si ce n'était pas vous, réinitialisez votre mot de passe tout de suite et"
            " contactez le support.",
        ),
    ),
    MailKind.EMAIL_CHANGE: MailText(
        "Confirmez votre nouvelle adresse e-mail pour {app}",
        (
            "Votre compte doit désormais utiliser cette adresse. Confirmez-la en ouvrant le"
            " lien ci-dessous, ou avec ce code dans l'application : {code}",
            "Le lien et le code servent une fois, pendant {hours} heures. D'ici là, votre"
            " compte garde son adresse actuelle. Si ce n'était pas vous, ignorez ce message.",
        ),
        "Confirmer ma nouvelle adresse",
    ),
    MailKind.EMAIL_CHANGED: MailText(
        "L'adresse e-mail de votre compte {app} a été modifiée",
        (
            "Votre compte utilise désormais une autre adresse : {masked_email}. Les messages"
            " concernant votre compte y seront envoyés.",
            "Si ce n'était pas vous, ouvrez le lien ci-dessous dans les {days} jours : votre"
            " compte retrouvera cette adresse et tous les appareils seront déconnectés.",
        ),
        "Ce n'était pas moi : annuler la modification",
    ),
    MailKind.ACCOUNT_DELETED: MailText(
        "Votre compte {app} a été supprimé",
        (
            "Votre compte et ses données ont été supprimés, et tous les appareils ont été"
            " déconnectés.",
            "Si ce n'était pas vous, contactez le support.",
        ),
    ),
}

#: Every mail in every language, by BCP 47 primary language subtag.
CATALOG: dict[str, dict[MailKind, MailText]] = {"en": _EN, "de": _DE, "fr": _FR}
DEFAULT_LOCALE = "en"
