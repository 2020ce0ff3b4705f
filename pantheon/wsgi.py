import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pantheon.settings")

application = get_wsgi_application()

# Import every view now (and the model layer behind the chat views) rather than on the first
# request, then take everything loaded so far out of the garbage collector's generations: those
# objects live as long as the process, and each full collection during a request walked all of
# them (about a quarter of a millisecond per turn; docs/performance.md).
from django.urls import get_resolver  # noqa: E402

get_resolver().url_patterns  # noqa: B018 (the attribute access imports the URLconf)
gc.freeze()

# Every process serving turns keeps its multiplier cache current (PostgreSQL only).
from billing.propagation import start_listener  # noqa: E402

start_listener()
