"""Test-run defaults: PostgreSQL on 127.0.0.1 and a throwaway secret key.

Loaded as a plugin (`-p tests.env_defaults`) before pytest-django reads settings,
so plain `pytest` behaves like `make test`.
"""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/pantheon")
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-use-0123456789")
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("BETA_GRANT_CREDITS", "500")
# Test servers speak plain HTTP on 127.0.0.1.
os.environ.setdefault("SECURE_HTTPS", "false")
# Rate limits far above anything the suite sends; tests/security/test_throttling.py sets small ones.
os.environ.setdefault("THROTTLE_SIGNUP_RATE", "100000/minute")
os.environ.setdefault("THROTTLE_TOKEN_RATE", "100000/minute")
os.environ.setdefault("THROTTLE_TURN_RATE", "100000/minute")
os.environ.setdefault("THROTTLE_UPLOAD_RATE", "100000/minute")
