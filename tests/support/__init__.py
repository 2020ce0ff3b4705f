"""Reusable test helpers: servers and fakes, API clients (`clients`), shared fixtures
(`fixtures`), threads released together (`threads`), waiting with a deadline (`waiting`),
prices (`pricing`), migration states (`migrations`) and the markers `make test-fast` uses."""
