import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    """Usage rows belong to billing: `chat.LLMCallEvent` becomes `billing.UsageEvent`.

    State only: the table (`chat_llmcallevent`), its rows, indexes, constraints and
    the ledger's foreign key stay exactly where they are, so this moves nothing on
    an existing database. `chat.0004` then drops the old model from chat's state.
    """

    dependencies = [
        ("billing", "0005_drop_covered_fk_indexes"),
        ("chat", "0003_drop_covered_fk_indexes"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="UsageEvent",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("model_alias", models.CharField(max_length=64)),
                        ("provider_model", models.CharField(max_length=128)),
                        (
                            "purpose",
                            models.CharField(
                                choices=[("agent", "Agent"), ("manager", "Manager"), ("summary", "Summary")],
                                max_length=16,
                            ),
                        ),
                        ("input_tokens", models.PositiveIntegerField()),
                        ("output_tokens", models.PositiveIntegerField()),
                        ("multiplier", models.DecimalField(decimal_places=4, max_digits=20)),
                        ("pricing_version", models.CharField(max_length=32)),
                        ("credits_burned", models.DecimalField(decimal_places=4, max_digits=20)),
                        ("metered", models.BooleanField()),
                        ("latency_ms", models.PositiveIntegerField(default=0)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "room",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="usage_events",
                                to="chat.room",
                            ),
                        ),
                        (
                            "turn",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="usage_events",
                                to="chat.turn",
                            ),
                        ),
                        (
                            "user",
                            models.ForeignKey(
                                db_index=False,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="usage_events",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "db_table": "chat_llmcallevent",
                        "indexes": [
                            models.Index(
                                fields=["user", "-created_at", "-id"], name="chat_usage_user_newest"
                            ),
                            models.Index(
                                fields=["user", "model_alias", "-created_at", "-id"],
                                name="chat_usage_user_alias_newest",
                            ),
                        ],
                        "constraints": [
                            models.CheckConstraint(
                                condition=models.Q(("purpose__in", ["agent", "manager", "summary"])),
                                name="chat_llm_call_purpose",
                            ),
                            models.CheckConstraint(
                                condition=models.Q(("credits_burned__gte", 0)),
                                name="chat_llm_call_credits_non_negative",
                            ),
                            models.CheckConstraint(
                                condition=models.Q(("metered", True), ("credits_burned", 0), _connector="OR"),
                                name="chat_llm_call_unmetered_is_free",
                            ),
                        ],
                    },
                ),
                migrations.AlterField(
                    model_name="credittransaction",
                    name="usage_event",
                    field=models.OneToOneField(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="debit",
                        to="billing.usageevent",
                    ),
                ),
            ],
            database_operations=[],
        ),
    ]
