package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// In production the primary has its own host: cdc runs next to the
// application and ClickHouse elsewhere. This machine has two cores for
// all of them. Pinning PostgreSQL to one core and everything else to the
// other is the nearest stand-in: what the primary then loses with a
// consumer running is what the consumer costs it from off the host (its
// walsender's decoding, the commits waking it), not a share of the same
// cores. It is a stand-in only: the cores still share caches and memory
// bandwidth, and the primary has one core rather than its own machine.

// The split: PostgreSQL on one CPU, everything else on another.
const pgCPU, restCPU = 0, 1

// pinSplit gives PostgreSQL — the postmaster and every process it has
// started; backends and walsenders it forks later inherit its mask — CPU
// pgCPU, and clickhouse-server and this process (so pgbench, cdc and
// pg_recvlogical, which it starts, inherit it) CPU restCPU. The returned
// function gives all of them every CPU again.
func (b *bench) pinSplit() (restore func() error, err error) {
	postmaster, err := b.postmasterPID()
	if err != nil {
		return nil, err
	}
	all := unix.CPUSet{}
	for i := range numCPU() {
		all.Set(i)
	}
	restore = func() error {
		var errs []error
		for _, pid := range append(processTree(postmaster), b.clickhousePID(), os.Getpid()) {
			errs = append(errs, setAffinity(pid, all))
		}
		return errors.Join(errs...)
	}
	var pg, rest unix.CPUSet
	pg.Set(pgCPU)
	rest.Set(restCPU)
	for _, pid := range processTree(postmaster) {
		if err := setAffinity(pid, pg); err != nil {
			return nil, errors.Join(err, restore())
		}
	}
	for _, pid := range []int{b.clickhousePID(), os.Getpid()} {
		if err := setAffinity(pid, rest); err != nil {
			return nil, errors.Join(err, restore())
		}
	}
	return restore, nil
}

func (b *bench) postmasterPID() (int, error) {
	path := filepath.Join(b.o.dir, "pg", "postmaster.pid")
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read postmaster pid: %w", err)
	}
	first, _, _ := strings.Cut(string(data), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", path, err)
	}
	return pid, nil
}

// processTree is pid and its children (PostgreSQL's processes are one
// level deep under the postmaster).
func processTree(pid int) []int {
	pids := []int{pid}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
		if err != nil {
			continue
		}
		// The fields after the command name, which is in parentheses and
		// may hold spaces: state, ppid, ...
		_, after, ok := strings.Cut(string(data), ") ")
		if f := strings.Fields(after); ok && len(f) > 1 && f[1] == strconv.Itoa(pid) {
			pids = append(pids, child)
		}
	}
	return pids
}

// setAffinity sets the CPU mask of every thread of pid; a thread started
// later inherits its creator's. A process or thread that has exited is
// skipped.
func setAffinity(pid int, set unix.CPUSet) error {
	err := eachThread(pid, func(tid int) error { return unix.SchedSetaffinity(tid, &set) })
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("set CPU affinity: %w", err)
	}
	return nil
}
