"""W1 beside the peers: Restate and DBOS, installed and run from ``bench/peers/<peer>/run.sh``."""
