//! `cloudproxy bench`: a TURN load generator that speaks only standard TURN (RFC 8656), so it
//! drives any TURN server — ours, coturn, anything else — the same way.
//!
//! [`forward`] is the other half of a comparison: a batched UDP forwarder with no TURN logic
//! (`cloudproxy bench-forward`), driven by the same generator with [`Config::raw`], whose rate
//! is the ceiling a relay on the same system calls could reach on the same machine.
//!
//! ## What a run does
//!
//! 1. Starts its own UDP echo peer ([`echo`]) on the loopback address of the server's family
//!    (or [`Peer::ip`]): every datagram is sent straight back to its sender.
//! 2. Sets up N allocations, at most 64 at once ([`setup`]): Allocate, the 401 dance with TURN
//!    REST or static credentials, ChannelBind to the echo peer. Failures are grouped by cause
//!    (`Allocate: 401 Unauthorized ×100`); the set-up rate is allocations per second.
//! 3. Deals the allocations to `threads` workers ([`worker`]), which send ChannelData at the
//!    per-allocation rate. Each payload starts with a probe ([`probe`]): allocation, step,
//!    sequence number and send time. The relay forwards it to the peer, the peer echoes it,
//!    the relay wraps it in ChannelData again, and the worker matches it: loss is
//!    `sent − received` after a drain wait, latency is the round trip, duplicates and
//!    packets delivered to the wrong allocation are counted apart.
//! 4. Either one fixed-rate step, or `--rate max` ([`phase`]): an exponential ramp of short
//!    steps until loss reaches 0.1%, then bisection, reporting each step; or, with
//!    [`Setup::only`], holds the allocations idle (refreshed) so the server's memory can be read.
//!    A fixed-rate step may churn ([`churn`]): a share of the allocations per minute leave
//!    (deleted) and are replaced by new ones, as users come and go.
//!
//! ## How it stays out of the way
//!
//! The tool shares the machine with the server it measures, so every packet must cost it
//! little:
//! * no async runtime: blocking set-up threads, then one plain `epoll` loop per worker thread;
//! * batched system calls: the packets due for one allocation in a round go out as one
//!   segmented send (UDP GSO, `UDP_SEGMENT`: the stack is traversed once per run of up to 64
//!   datagrams; it falls back to `sendmmsg` where the kernel refuses), and a readable socket is
//!   drained 64 datagrams per `recvmmsg`; the echo peer answers a whole `recvmmsg` batch with
//!   one `sendmmsg` from the same buffers (the kernel wrote each sender's address where the
//!   reply header points);
//! * pacing by a token bucket per thread, not a sleep per packet: the thread sleeps (timer
//!   slack lowered to 10 µs) until ~150 µs of sending is due, at most 32 packets, so at 100k+
//!   packets/s it wakes ~7,000 times a second, and at audio rates once per packet;
//! * over UDP a sending thread reads only when it wakes to send, not on every arrival: the
//!   kernel stamps each datagram on arrival (`SO_TIMESTAMPNS`, read from the `recvmmsg`
//!   control messages), so reading late does not change the measured latency, and one
//!   wake-up per batch replaces one per packet (TCP/TLS wake on arrival, measured on read);
//! * no allocation and no copy per packet: frames are pre-built and only the 24-byte probe is
//!   written; counters are per-thread atomics the driver reads, never locks; latency goes
//!   into a fixed log-bucketed histogram ([`histogram`]);
//! * large socket buffers (4 MiB, forced past `rmem_max` when running as root).
//!
//! ## Its limits — read before quoting a figure
//!
//! * **It shares the CPU.** On one machine the generator, its echo peer and the server compete
//!   for the same cores, and on loopback the *sender* pays for delivering each datagram into
//!   the receiver's socket and waking the receiver's thread — so part of the relay's kernel
//!   work is charged to the generator. Measured on the 2-vCPU VM of the benchmarks, 1
//!   allocation at 35,000 round trips/s: the worker thread used 0.27 core and the echo thread
//!   0.24 (about 7 µs of CPU per datagram each way, almost all of it kernel). Every step
//!   reports the generator's own CPU use (`generator_cpu`, in cores), and a step the generator
//!   could not send at full rate is marked `short`, not `pass`. Absolute figures on a 2-core
//!   machine are therefore far below what the server does with the cores to itself; ratios
//!   between two servers measured the same way are the meaningful result.
//! * **One echo thread** by default tops out near 140,000 datagrams/s at that cost;
//!   `--echo-threads` adds more (one `SO_REUSEPORT` socket each).
//! * **Many allocations batch less.** A send batches per socket, and each allocation is its own
//!   socket (its own 5-tuple), so with 1,000 allocations at 100 packets/s each most sends are
//!   single datagrams, one system call each (at 100 allocations the generator used about 0.8
//!   core where 1 allocation needed 0.5 at the same total rate); receiving still batches per
//!   readable socket.
//! * **Latency includes the generator's send path** (one send timestamp per send batch)
//!   and the echo peer's turnaround, typically tens of microseconds on an idle machine, more
//!   under load: it is an upper bound of what the relay adds. Over UDP the receive side is the
//!   kernel's arrival timestamp; over TCP/TLS it is when the frame is read. Timestamps are
//!   CLOCK_REALTIME (the clock of `SO_TIMESTAMPNS`): a clock step during a run skews them.
//! * **Pacing granularity** is ~150 µs; a thread that falls more than 5 ms behind (descheduled)
//!   drops the excess tokens, which shows as a rate shortfall (`short`), rather than bursting.
//! * **TCP/TLS** cannot lose packets in transit; overload shows as latency, as packets the
//!   relay drops from a full per-connection queue, or as `unsent` (our stream backlogged).
//! * One channel per allocation, to one peer address; no Send indications, no EVEN-PORT,
//!   no DTLS. Refreshes every 120 s keep long runs alive; UDP allocations are deleted
//!   (Refresh lifetime 0) at the end, TCP/TLS ones by closing the connection.

pub mod churn;
pub mod config;
pub mod control;
pub mod data_conn;
pub mod driver;
pub mod echo;
pub mod error;
mod flow;
pub mod forward;
pub mod histogram;
pub mod phase;
pub mod probe;
pub mod report;
pub mod setup;
pub mod sys;
pub mod tls;
pub mod worker;

pub use config::{
    Config, Credentials, Peer, Preset, Rate, Search, Setup, Transport, MAX_SIZE, MIN_SIZE,
};
pub use driver::run;
pub use error::{BenchError, SetupError, Stage};
pub use report::Event;
pub use report::{
    ChurnReport, DataCounters, Latency, Report, SetupReport, StepReport, Verdict, Workload,
};
