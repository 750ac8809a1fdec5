"""Mail to users: what it says (`catalog`), how it is built (`messages`), the outbox it waits
in (`outbox`) and its delivery over SMTP (`delivery`). docs/mail.md."""
