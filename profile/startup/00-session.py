# nanostrain beamline profile: build the session (RunEngine, catalog, live analyses).
# Configure with environment variables (set by `nanostrain shell`; see
# nanostrain.session.options_from_environment):
#   NANOSTRAIN_DATA_DIR          data folder (default ./nanostrain-data)
#   NANOSTRAIN_CATALOG           URL of a running `nanostrain serve` (default: embedded)
#   NANOSTRAIN_API_KEY           its API key (default: <data dir>/api_key)
#   NANOSTRAIN_BEAMLINE_CONFIG   TOML of real EPICS devices (default: simulated beamline)
#   NANOSTRAIN_BEC, NANOSTRAIN_PLOTS  "0" turns off the BestEffortCallback / live figures
import os

from nanostrain.catalog import broker
from nanostrain.session import make_session, options_from_environment

session = make_session(**options_from_environment(os.environ))
RE = session.RE
# catalog: the raw runs, a bluesky-tiled-plugins CatalogOfBlueskyRuns (catalog[-1],
# catalog[scan_id], catalog["<partial uid>"], catalog.search(TimeRange(...))); derived:
# what the live analyses made (session.derived_runs(uid)); db: databroker's v1 Broker over
# the raw runs, for profiles that still use db[-1].table(). With the catalog down the
# session still runs plans (the journal keeps every run; they reach the catalog when it
# is back); these names then wait for session.catalog / session.derived.
try:
    catalog = session.catalog
    derived = session.derived
    db = broker(catalog)
except Exception as _error:  # the catalog does not answer
    print(f"The catalog does not answer ({_error}); runs are journaled and resynced when it does.")
