"""The partitioned stream consumer every stage is built on: partition leases (which worker
holds which partition), one partition's stream as its lease holder reads it (fenced take-over
and reads, failure counts, dead letters), the consumer base that follows the leases with a
task per owned partition, and the pumps that move due work of owned partitions."""
