"""The account's life after registration: verifying the address, resetting and changing the
password, changing the address, deleting the account (docs/account.md)."""
