# Plans: nanostrain's, and bluesky's usual aliases.
import bluesky.plan_stubs as bps  # noqa: F401
import bluesky.plans as bp  # noqa: F401

globals().update(session.plans)
