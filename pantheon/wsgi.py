import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pantheon.settings")

application = get_wsgi_application()

# Every process serving turns keeps its multiplier cache current (PostgreSQL only).
from billing.propagation import start_listener  # noqa: E402

start_listener()
