from django.db import migrations


def _rename_content_type(apps, old: tuple[str, str], new: tuple[str, str], name: str) -> None:
    """Rename the model's content type and its permissions, so staff keep their rights on usage rows
    (on a fresh database there are none yet: post_migrate creates the new ones)."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    found = ContentType.objects.filter(app_label=old[0], model=old[1]).first()
    if found is None or ContentType.objects.filter(app_label=new[0], model=new[1]).exists():
        return
    found.app_label, found.model = new
    found.save(update_fields=["app_label", "model"])
    for permission in Permission.objects.filter(content_type=found):
        action = permission.codename.split("_", 1)[0]
        permission.codename = f"{action}_{new[1]}"
        permission.name = f"Can {action} {name}"
        permission.save(update_fields=["codename", "name"])


def move_content_type(apps, schema_editor):
    _rename_content_type(apps, ("chat", "llmcallevent"), ("billing", "usageevent"), "usage event")


def move_content_type_back(apps, schema_editor):
    _rename_content_type(apps, ("billing", "usageevent"), ("chat", "llmcallevent"), "llm call event")


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
