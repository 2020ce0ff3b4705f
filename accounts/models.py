from django.contrib.auth.models import AbstractUser


class User(AbstractUser):
    """Custom user from the first migration, so the model can grow without pain."""

    class Meta:
        db_table = "accounts_user"
