# The two commands a newcomer needs: `make dev` and `make test`. Everything else is optional.
.PHONY: dev test infra-check bench bench-hot bench-all-in-one bench-lean bench-edge bench-iggy bench-archive bench-query bench-import
.PHONY: fuzz api-fuzz chaos clean

dev: ## set up and run the platform locally on embedded defaults
	@bash scripts/dev.sh

test: ## run every test (what CI runs)
	@bash scripts/test.sh

infra-check: ## validate the deployment definitions offline (infra/, wrangler.toml); needs the built Worker and node
	@bash scripts/test-infra.sh

bench: ## HTTP and durable-batch benchmarks against nginx on this machine (release build, needs apt)
	@bash tests/bench/run.sh

bench-hot: ## the filter and the stats consumer draining a preloaded log of 2M events into the hot tier (events/s, bytes, RSS, rows written)
	@bash tests/bench/hot.sh

bench-all-in-one: ## the all-in-one node (ingest and every consumer) under sustained /batch load: the hot tier's lag
	@bash tests/bench/all-in-one.sh

bench-lean: ## the node with every feature against the lean production node: crates, binary size, redirects/s, peak RSS
	@bash tests/bench/lean.sh

bench-edge: ## the Rust Worker against a JavaScript reference Worker in workerd
	@bash tests/bench/edge.sh

bench-archive: ## events/s archived from the log into Delta (local disk, local S3), against DuckDB writing Parquet
	@bash tests/bench/archive.sh

bench-query: ## cold (DataFusion) and warm (Polars) queries over 10M archived events against DuckDB; the Lambda's size and cold start
	@bash tests/bench/query.sh

bench-import: ## history import (NDJSON into the embedded log, each event checked and durable) against DuckDB reading the same file
	@bash tests/bench/import.sh

bench-iggy: ## producer throughput on the Iggy server at IGGY_TEST_ADDR against the embedded log
	@bash tests/bench/iggy.sh

fuzz: ## run each cargo-fuzz target for FUZZ_SECONDS (default 60), or FUZZ_RUNS executions each
	@bash scripts/fuzz.sh

chaos: ## the local stack under load while core nodes are killed and restarted; ends with the ledger (DURATION_SECS)
	@bash scripts/chaos.sh

api-fuzz: ## schemathesis against a live core node with the OpenAPI document (MAX_EXAMPLES, default 50)
	@bash scripts/api-fuzz.sh

clean:
	cargo clean
