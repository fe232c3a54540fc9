#!/usr/bin/env python3
"""walsender-sample.py PGPORT SECONDS > samples.txt

Every 2 ms, for each walsender of the PostgreSQL listening on PGPORT: its
state (R running, S sleeping), where it sleeps (/proc/<pid>/wchan) and the
two ends of its TCP connection from /proc/net/tcp: bytes the walsender has
not yet had acknowledged (ws_tx) and bytes cdc has not yet read (cdc_rx).
Run it next to `bash bench/run.sh -steps drain` to see whether the
walsender is working, waiting for a core, or blocked on a full socket:

    bash bench/run.sh -steps drain &
    until [ -s .local/bench/pg.port ]; do sleep 0.2; done
    python3 bench/walsender-sample.py "$(cat .local/bench/pg.port)" 45 > samples.txt
"""
import glob
import sys
import time


def queues():
    q = {}
    for line in open('/proc/net/tcp').readlines()[1:]:
        f = line.split()
        lport = int(f[1].split(':')[1], 16)
        rport = int(f[2].split(':')[1], 16)
        tx, rx = (int(x, 16) for x in f[4].split(':'))
        q[(lport, rport)] = (tx, rx)
    return q


def walsenders():
    for path in glob.glob('/proc/[0-9]*/cmdline'):
        try:
            cmd = open(path, 'rb').read()
            if not cmd.startswith(b'postgres: walsender'):
                continue
            pid = path.split('/')[2]
            stat = open(f'/proc/{pid}/stat').read()
            wchan = open(f'/proc/{pid}/wchan').read() or '0'
        except OSError:
            continue  # gone meanwhile
        # "postgres: walsender user 127.0.0.1(PORT) ..."
        port = int(cmd.split(b'(')[1].split(b')')[0]) if b'(' in cmd else 0
        yield pid, stat[stat.rindex(')') + 2], wchan, port


def main():
    pgport, seconds = int(sys.argv[1]), float(sys.argv[2])
    end = time.time() + seconds
    while time.time() < end:
        now = time.time()
        found = list(walsenders())
        if found:
            q = queues()
            for pid, state, wchan, port in found:
                ws_tx = q.get((pgport, port), (-1, -1))[0]
                cdc_rx = q.get((port, pgport), (-1, -1))[1]
                print(f'{now:.4f} {pid} {state} {wchan} ws_tx={ws_tx} cdc_rx={cdc_rx}')
        time.sleep(0.002)


if __name__ == '__main__':
    main()
