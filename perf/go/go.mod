module ringnet/perf/go

go 1.19
