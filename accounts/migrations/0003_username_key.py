"""accounts_user.username_key: the NFKC case-folded username, unique in the database.

Existing rows get their key. Should two existing users already share one (a
look-alike stored before this migration), the oldest keeps the key and each
later one gets `<key>#<id>` ("#" cannot occur in a username): both accounts
keep working, log in by their exact name, and no new look-alike of either can
be created. The migration prints who was affected.
"""

import unicodedata

from django.db import migrations, models

import accounts.models


def _key(username: str) -> str:
    # A copy of accounts.models.username_key as of this migration.
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", username).casefold())


def fill_username_keys(apps, schema_editor):
    User = apps.get_model("accounts", "User")
    taken: set[str] = set()
    for user in User.objects.order_by("pk").only("pk", "username"):
        key = _key(user.username)
        if key in taken:
            print(f"\n  accounts.0003: user {user.pk} ({user.username!r}) looks like an older user's name")
            key = f"{key}#{user.pk}"
        taken.add(key)
        User.objects.filter(pk=user.pk).update(username_key=key)


class Migration(migrations.Migration):
    dependencies = [("accounts", "0002_cache_table")]

    operations = [
        migrations.AlterModelManagers(
            name="user",
            managers=[("objects", accounts.models.PantheonUserManager())],
        ),
        migrations.AddField(
            model_name="user",
            name="username_key",
            field=models.TextField(editable=False, null=True),
        ),
        migrations.RunPython(fill_username_keys, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="user",
            name="username_key",
            field=models.TextField(editable=False, null=True, unique=True),
        ),
    ]
