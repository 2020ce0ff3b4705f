"""The turn bulkhead: how many turns of this process do their CPU work at once.

`turn_work.inside()` wraps a turn's own work (its request, its commit);
`turn_work.outside()` wraps every wait in it (the model calls, a retry waiting
for the first request). See pantheon/bulkhead.py and TURN_CPU_SLOTS.
"""

from django.conf import settings

from pantheon.bulkhead import Bulkhead

turn_work = Bulkhead(lambda: settings.TURN_CPU_SLOTS)
