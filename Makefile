# Conveniences for developers; the scripts they call work without make.
.PHONY: demo test bench build
build:
	swift build
demo:
	bash .ci/demo
test:
	bash .ci/run
bench:
	bash Benchmarks/run
