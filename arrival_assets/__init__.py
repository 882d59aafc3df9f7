"""The Dagster layer and the `arrival` command over the pure core (`arrival_core`)."""
from arrival_core import memory

# Every process of this layer (a command, a code location, a run worker, a Celery worker) bounds malloc's heaps
# before NumPy or Arrow start a thread, and passes the bound to the processes it starts.
memory.share_heaps()
