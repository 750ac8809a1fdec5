"""The API's side of account deletion: erase a deleted user's data when the auth service
says so (`bulwark.common.account_deletions`; docs/account-deletion.md)."""
