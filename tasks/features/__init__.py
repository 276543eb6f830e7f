"""The feature pipeline (config/pipelines/features.toml), one module per step:

    ingest → map(validate → transform) → aggregate → store

- `ingest` finds CSV and JSON Lines files under a directory (a glob), checks and hashes each, and
  cuts them into partitions: one per file, or ranges of `partition_rows` rows;
- `validate` checks each row against a pydantic schema (`schema.Reading`); bad rows go to the
  quarantine with file, line and reason, and too many bad rows fail the partition;
- `transform` derives the per-row features of each partition;
- `aggregate`, the fan-in, merges the partitions in a fixed order and computes dataset statistics;
- `store` publishes the features (Parquet) and the quarantine as a new version of the versioned
  feature store (see `versions`), then the job's lineage record (see `lineage`).

Steps hand rows to each other through files in <data_dir>/work/<job_id>/ (see `partitions`), so
results in Redis stay small however many partitions there are; across hosts, `data.work_url`
names a bucket that carries those files between workers (`shared`), so no disk is shared. Every
path a step is handed is checked first (`paths`): inputs only under the input roots, work files
only in the job's own work directory. `jobrunner demo` runs this pipeline on the sample data in
tasks/sample_data/.
"""

from jobrunner.tasks.features.aggregate import aggregate
from jobrunner.tasks.features.ingest import ingest
from jobrunner.tasks.features.paths import SAMPLE_DATA_DIR
from jobrunner.tasks.features.store import store
from jobrunner.tasks.features.transform import transform
from jobrunner.tasks.features.validate import validate

__all__ = ["SAMPLE_DATA_DIR", "aggregate", "ingest", "store", "transform", "validate"]
