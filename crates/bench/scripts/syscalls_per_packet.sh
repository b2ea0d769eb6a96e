#!/bin/bash
# System calls per relayed round trip for cloudproxy, coturn 4.6.1 and the raw forwarder: each
# server under `strace -c -f` for 4 s of a fixed-rate run (N allocations, RATE round trips/s).
# strace slows every call, so read the figures as shapes. Needs root (ptrace) and coturn.
# Usage: N=100 RATE=10000 CLOUDPROXY=target/release/cloudproxy crates/bench/scripts/syscalls_per_packet.sh
cd "$(dirname "$0")/../../.." || exit 1
B=${CLOUDPROXY:-target/release/cloudproxy}; OUT=${OUT:-/tmp}
N=${N:-100}; RATE=${RATE:-10000}
for server in cloudproxy coturn forwarder; do
  case $server in
    cloudproxy) $B relay --udp 127.0.0.1:29478 --static-secret s --realm r --allow-peer 127.0.0.1/32 --no-metrics --relay-ports 5000-15999 --shards 2 --log-level warn >/dev/null 2>&1 & PID=$!; port=29478; extra="";;
    coturn) turnserver -n --listening-ip=127.0.0.1 --relay-ip=127.0.0.1 --listening-port=28478 --use-auth-secret --static-auth-secret=s --realm=r --allow-loopback-peers --no-cli --no-dtls --no-tls --no-tcp-relay --min-port=16000 --max-port=26999 --relay-threads=2 --log-file=/dev/null --no-stdout-log >/dev/null 2>&1 & PID=$!; port=28478; extra="";;
    forwarder) $B bench-forward --listen 127.0.0.1:27478 --peer 127.0.0.1:27999 --threads 2 >/dev/null 2>&1 & PID=$!; port=27478; extra="--raw --peer-port 27999";;
  esac
  sleep 1
  $B bench --server 127.0.0.1:$port --secret s --allocations $N --rate $(python3 -c "print($RATE/$N)") --duration 8 --size 200 $extra > $OUT/strace-$server-$N.bench 2>&1 &
  BP=$!
  sleep 3
  timeout -s INT 4 strace -c -f -p $PID -o $OUT/strace-$server-$N.txt
  wait $BP
  kill -INT $PID 2>/dev/null; kill $PID 2>/dev/null; wait $PID 2>/dev/null
  calls=$(grep -E "^[0-9. ]+total" $OUT/strace-$server-$N.txt | awk '{print $(NF-1)}')
  [ -z "$calls" ] && calls=$(tail -1 $OUT/strace-$server-$N.txt | awk '{print $3}')
  echo "$server N=$N rate=$RATE: $(tail -1 $OUT/strace-$server-$N.txt) -> $(python3 -c "print(round(int('$calls')/($RATE*4),2))") syscalls per round trip; $(grep -E 'loss' $OUT/strace-$server-$N.bench | tail -1)"
  sleep 1
done
