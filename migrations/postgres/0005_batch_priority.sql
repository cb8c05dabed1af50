-- A batch's priority (`metadata.priority`: lower runs first, as vLLM's): its chunks are claimed
-- before those of batches with a higher value, and its requests carry it to vLLM. NULL: none
-- set (the worker's --upstream-priority applies, and it claims as 0).
ALTER TABLE batches ADD COLUMN priority BIGINT;
