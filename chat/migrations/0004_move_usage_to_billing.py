from django.db import migrations


def move_content_type(apps, schema_editor):
    """Keep staff permissions on usage rows: the old content type and its permissions are renamed
    (on a fresh database there are none yet; post_migrate creates billing's)."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    old = ContentType.objects.filter(app_label="chat", model="llmcallevent").first()
    if old is None or ContentType.objects.filter(app_label="billing", model="usageevent").exists():
        return
    old.app_label, old.model = "billing", "usageevent"
    old.save(update_fields=["app_label", "model"])
    for permission in Permission.objects.filter(content_type=old):
        action = permission.codename.split("_", 1)[0]
        permission.codename = f"{action}_usageevent"
        permission.name = f"Can {action} usage event"
        permission.save(update_fields=["codename", "name"])


def move_content_type_back(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    moved = ContentType.objects.filter(app_label="billing", model="usageevent").first()
    if moved is None or ContentType.objects.filter(app_label="chat", model="llmcallevent").exists():
        return
    moved.app_label, moved.model = "chat", "llmcallevent"
    moved.save(update_fields=["app_label", "model"])
    for permission in Permission.objects.filter(content_type=moved):
        action = permission.codename.split("_", 1)[0]
        permission.codename = f"{action}_llmcallevent"
        permission.name = f"Can {action} llm call event"
        permission.save(update_fields=["codename", "name"])


class Migration(migrations.Migration):
    """`LLMCallEvent` leaves chat's state; `billing.0006` took it over as `UsageEvent`, same table."""

    dependencies = [
        ("chat", "0003_drop_covered_fk_indexes"),
        ("billing", "0006_usageevent"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="LLMCallEvent")],
            database_operations=[],
        ),
        migrations.RunPython(move_content_type, move_content_type_back),
    ]
