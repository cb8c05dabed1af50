-- A chunk's durable progress (JSON: the part files committed so far, which of its lines they
-- answer, their counts and usage), recorded with each heartbeat: a worker that takes the chunk
-- over keeps it and sends only the lines it lacks. NULL: nothing checkpointed yet.
ALTER TABLE chunks ADD COLUMN checkpoint TEXT;
