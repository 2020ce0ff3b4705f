"""Text extracted at upload. Rows uploaded before this are `pending`: the file tools extract
their text once, with the same bounds, the first time a turn reads them (docs/decisions.md)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0004_move_usage_to_billing"),
    ]

    operations = [
        migrations.AddField(
            model_name="uploadedfile",
            name="extracted_text",
            field=models.TextField(blank=True, default=""),
        ),
        migrations.AddField(
            model_name="uploadedfile",
            name="extraction_note",
            field=models.CharField(blank=True, default="", max_length=300),
        ),
        migrations.AddField(
            model_name="uploadedfile",
            name="extraction_status",
            field=models.CharField(
                choices=[("pending", "Pending"), ("ok", "Ok"), ("unreadable", "Unreadable")],
                default="pending",
                max_length=16,
            ),
        ),
        migrations.AddConstraint(
            model_name="uploadedfile",
            constraint=models.CheckConstraint(
                condition=models.Q(("extraction_status__in", ["pending", "ok", "unreadable"])),
                name="chat_file_extraction_status",
            ),
        ),
    ]
