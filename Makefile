# The two commands of the README: `make demo` and `make test`. Both set everything up first.
.PHONY: setup demo test bench

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/jupyter-byok demo

test: setup
	bash scripts/test.sh

# Not part of the test suite: performance figures against the loopback fakes (benchmarks/).
bench: setup
	.venv/bin/pip install -q -e ".[local,test,bench]"
	.venv/bin/python benchmarks/bench_dispatch.py
	.venv/bin/python benchmarks/bench_ledger.py
	.venv/bin/python benchmarks/bench_server_load.py
