// chanbench: the Go peer of perf/chan_bench.c (perf/run --threads runs both
// in the same run). Two goroutines, each locked to its own OS thread and
// that thread pinned to the first or second CPU of the process's affinity
// mask (as rn_run_threads pins its threads); run it with GOMAXPROCS=2.
//
// Modes (-mode):
//
//	go-pingpong  a round trip over two channels of capacity 1
//	go-stream    one producer, one consumer, a channel of -cap items
//	             (default 1024), one uintptr per send
//	go-batch     each send a pointer to a block of -batch items (default
//	             64), channel capacity cap/batch blocks, blocks recycled
//	             round robin from a pool the channel cannot overrun
//
// Every item is checked (the sequence 1, 2, 3, ...). Prints one line as
// chan_bench does:
//
//	RESULT mode=M ops=N seconds=S ns_per_op=X mops=Y cpu_s=C
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"
)

const warmup = 2000

// pin locks the calling goroutine to its thread and that thread to the
// idx-th CPU of the process's affinity mask.
func pin(idx int) {
	runtime.LockOSThread()
	var mask [16]uint64
	_, _, e := syscall.RawSyscall(syscall.SYS_SCHED_GETAFFINITY, 0, unsafe.Sizeof(mask),
		uintptr(unsafe.Pointer(&mask)))
	if e != 0 {
		return
	}
	var cpus []int
	for c := 0; c < len(mask)*64; c++ {
		if mask[c/64]&(1<<(c%64)) != 0 {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) == 0 {
		return
	}
	c := cpus[idx%len(cpus)]
	var one [16]uint64
	one[c/64] = 1 << (c % 64)
	syscall.RawSyscall(syscall.SYS_SCHED_SETAFFINITY, 0, unsafe.Sizeof(one),
		uintptr(unsafe.Pointer(&one)))
}

func cpuNow() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Sec) + float64(ru.Utime.Usec)/1e6 +
		float64(ru.Stime.Sec) + float64(ru.Stime.Usec)/1e6
}

type block struct {
	n    int
	item []uintptr
}

func main() {
	mode := flag.String("mode", "", "go-pingpong | go-stream | go-batch")
	ops := flag.Int64("ops", 0, "round trips or items (default 100000 / 4000000)")
	capacity := flag.Int("cap", 1024, "channel capacity in items")
	batch := flag.Int("batch", 64, "items per block (go-batch)")
	flag.Parse()
	if *ops == 0 {
		*ops = 4000000
		if *mode == "go-pingpong" {
			*ops = 100000
		}
	}
	n := *ops
	var t0, t1 time.Time
	var c0, c1 float64
	var bad int64
	done := make(chan struct{})
	switch *mode {
	case "go-pingpong":
		a, b := make(chan uintptr, 1), make(chan uintptr, 1)
		go func() {
			pin(1)
			for v := range a {
				b <- v
			}
			close(done)
		}()
		pin(0)
		for i := int64(-warmup); i < n; i++ {
			if i == 0 {
				c0, t0 = cpuNow(), time.Now()
			}
			v := uintptr(i + warmup + 1)
			a <- v
			if <-b != v {
				bad++
			}
		}
		t1, c1 = time.Now(), cpuNow()
		close(a)
		<-done
	case "go-stream":
		a := make(chan uintptr, *capacity)
		go func() {
			pin(1)
			next := uintptr(1)
			for v := range a {
				if v != next {
					bad++
				}
				next++
			}
			t1, c1 = time.Now(), cpuNow()
			if int64(next-1) != n {
				bad++
			}
			close(done)
		}()
		pin(0)
		c0, t0 = cpuNow(), time.Now()
		for i := int64(1); i <= n; i++ {
			a <- uintptr(i)
		}
		close(a)
		<-done
	case "go-batch":
		nb := *capacity / *batch
		if nb < 1 {
			nb = 1
		}
		pool := make([]*block, nb+3)
		for i := range pool {
			pool[i] = &block{item: make([]uintptr, *batch)}
		}
		a := make(chan *block, nb)
		go func() {
			pin(1)
			next := uintptr(1)
			for b := range a {
				for _, v := range b.item[:b.n] {
					if v != next {
						bad++
					}
					next++
				}
			}
			t1, c1 = time.Now(), cpuNow()
			if int64(next-1) != n {
				bad++
			}
			close(done)
		}()
		pin(0)
		c0, t0 = cpuNow(), time.Now()
		v := uintptr(1)
		for k := 0; int64(v) <= n; k++ {
			b := pool[k%len(pool)]
			b.n = 0
			for b.n < *batch && int64(v) <= n {
				b.item[b.n] = v
				b.n++
				v++
			}
			a <- b
		}
		close(a)
		<-done
	default:
		fmt.Fprintln(os.Stderr, "chanbench: -mode must be go-pingpong, go-stream or go-batch")
		os.Exit(2)
	}
	if bad != 0 {
		fmt.Fprintf(os.Stderr, "chanbench: %s: %d items wrong or missing\n", *mode, bad)
		os.Exit(1)
	}
	s := t1.Sub(t0).Seconds()
	fmt.Printf("RESULT mode=%s ops=%d seconds=%.4f ns_per_op=%.1f mops=%.3f cpu_s=%.3f\n",
		*mode, n, s, s*1e9/float64(n), float64(n)/s/1e6, c1-c0)
}
