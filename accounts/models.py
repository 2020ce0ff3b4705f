"""The user model.

Two rules every door must obey — the sign-up page and API, the Django admin,
`createsuperuser`, `changepassword`, plain `set_password()` + `save()` — so
they live on the model rather than in one service:

- A username's identity is its NFKC case-folded form (`username_key`): "Alice",
  "ALICE" and full-width "ａｌｉｃｅ" are one name, unique in the database.
- Changing the password revokes every API token of the user; Django's session
  hash already ends every other session at its next request.
"""

from __future__ import annotations

import unicodedata
from typing import ClassVar

from django.contrib.auth.models import AbstractUser, UserManager
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

TAKEN = "A user with that username already exists."


def username_key(username: str) -> str:
    """NFKC_Casefold, as Unicode recommends for identifiers: NFKC, case-fold, NFKC again."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", username).casefold())


class PantheonUserManager(UserManager["User"]):
    def get_by_natural_key(self, username):
        """The exact username, else the one user whose normalized name matches.

        Log-in, tokens and `createsuperuser`'s "already taken" check all go
        through here, so "ALICE" finds alice and a look-alike is not a new name.
        """
        key = username_key(username)
        rows = list(self.filter(Q(username=username) | Q(username_key=key))[:2])
        for row in rows:
            if row.username == username:
                return row
        if rows:
            return rows[0]
        raise self.model.DoesNotExist(f"No user named {username!r}.")


class User(AbstractUser):
    """Custom user from the first migration, so the model can grow without pain."""

    # Unique in the database, so no door (admin, createsuperuser, a race between two
    # sign-ups) can store a second spelling of an existing name. Set by every save();
    # NULL only for rows written without this class (historical models in migrations).
    username_key = models.TextField(unique=True, null=True, editable=False)

    objects: ClassVar[PantheonUserManager] = PantheonUserManager()

    class Meta:
        db_table = "accounts_user"

    def clean(self) -> None:
        super().clean()
        look_alike = User.objects.filter(username_key=username_key(self.username or ""))
        if self.pk is not None:
            look_alike = look_alike.exclude(pk=self.pk)
        if look_alike.exists():
            raise ValidationError({"username": TAKEN})

    def save(self, *args, **kwargs) -> None:
        self.username_key = username_key(self.username or "")
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "username" in update_fields:
            kwargs["update_fields"] = {*update_fields, "username_key"}
        # set_password() keeps the raw password here until the save; a login that only
        # re-hashes it under a newer hasher clears it first (check_password's setter).
        password_changed = getattr(self, "_password", None) is not None and not self._state.adding
        super().save(*args, **kwargs)
        if password_changed:
            from accounts.services import user_credentials_revoke

            user_credentials_revoke(user=self)


class RateLimitCounter(models.Model):
    """One fixed-window request counter of `pantheon.throttling` when there is no Redis.

    The key names the scope, the client and the window, so a window ends when
    the clock passes `window_end` whatever happens to the row; rows of ended
    windows are only clean-up. Incremented by one atomic upsert
    (`INSERT … ON CONFLICT DO UPDATE … RETURNING`), exact under concurrency,
    unlike the database cache, whose `incr` is a read then a write that also
    resets the expiry to the cache default.
    """

    key = models.CharField(max_length=255, primary_key=True)
    count = models.PositiveIntegerField()
    # Unix time (seconds) when the window ends, on the throttle's own clock.
    window_end = models.BigIntegerField(db_index=True)

    class Meta:
        db_table = "pantheon_rate_limit_counter"

    def __str__(self) -> str:
        return f"{self.key}={self.count}"
