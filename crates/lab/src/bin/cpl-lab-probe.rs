//! `cpl-lab-probe`: the plain network tool the lab's self-tests run inside its namespaces, so
//! they need neither netcat nor python. Standard library only.
//!
//! ```text
//! cpl-lab-probe serve udp:ADDR|tcp:ADDR …   echo servers; prints `ready` once all listen
//! cpl-lab-probe udp TARGET COUNT WAIT_MS    sends COUNT numbered datagrams, collects echoes
//!                                           until WAIT_MS pass without one; prints
//!                                           `sent=N received=M send_errors=E`
//! cpl-lab-probe tcp TARGET TIMEOUT_MS       connects, sends one line, reads it back; prints
//!                                           `connected=BOOL echoed=BOOL error=…`
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("udp") if args.len() == 4 => udp(&args[1], &args[2], &args[3]),
        Some("tcp") if args.len() == 3 => tcp(&args[1], &args[2]),
        _ => Err(
            "usage: cpl-lab-probe serve SPEC… | udp TARGET COUNT WAIT_MS | \
                  tcp TARGET TIMEOUT_MS"
                .to_owned(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cpl-lab-probe: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, String> {
    text.parse().map_err(|_| format!("bad {what}: {text:?}"))
}

/// Echo servers on every `udp:ADDR` / `tcp:ADDR`; runs until killed.
fn serve(specs: &[String]) -> Result<(), String> {
    if specs.is_empty() {
        return Err("serve needs at least one udp:ADDR or tcp:ADDR".into());
    }
    for spec in specs {
        let bind_error = |e| format!("cannot bind {spec}: {e}");
        match spec.split_once(':') {
            Some(("udp", addr)) => {
                let socket =
                    UdpSocket::bind(parse::<SocketAddr>("address", addr)?).map_err(bind_error)?;
                thread::spawn(move || udp_echo(socket));
            }
            Some(("tcp", addr)) => {
                let listener =
                    TcpListener::bind(parse::<SocketAddr>("address", addr)?).map_err(bind_error)?;
                thread::spawn(move || tcp_echo(listener));
            }
            _ => return Err(format!("bad listener {spec:?}: want udp:ADDR or tcp:ADDR")),
        }
    }
    println!("ready");
    loop {
        thread::park();
    }
}

fn udp_echo(socket: UdpSocket) {
    let mut buf = [0u8; 2048];
    loop {
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    }
}

fn tcp_echo(listener: TcpListener) {
    for mut stream in listener.incoming().flatten() {
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok(n @ 1..) = stream.read(&mut buf) {
                if stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
}

/// Sends `count` datagrams carrying their sequence number and counts distinct echoes.
fn udp(target: &str, count: &str, wait_ms: &str) -> Result<(), String> {
    let target: SocketAddr = parse("target", target)?;
    let count: u32 = parse("count", count)?;
    let wait = Duration::from_millis(parse("wait", wait_ms)?);
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
    socket
        .set_read_timeout(Some(Duration::from_millis(5)))
        .map_err(|e| e.to_string())?;
    let mut seen = vec![false; count as usize];
    let (mut sent, mut received, mut send_errors) = (0u32, 0u32, 0u32);
    let mut payload = [0u8; 64];
    let mut buf = [0u8; 2048];
    let mut collect = |seen: &mut Vec<bool>, received: &mut u32| {
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if from != target || n < 4 {
                continue;
            }
            let seq = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if seq < seen.len() && !seen[seq] {
                seen[seq] = true;
                *received += 1;
            }
        }
    };
    for seq in 0..count {
        payload[..4].copy_from_slice(&seq.to_be_bytes());
        match socket.send_to(&payload, target) {
            Ok(_) => sent += 1,
            Err(_) => send_errors += 1,
        }
        // Paced, so a burst does not overflow the kernel's per-CPU backlog (1000 packets)
        // and pass for firewall loss.
        if seq % 20 == 19 {
            collect(&mut seen, &mut received);
        }
    }
    let mut quiet_since = Instant::now();
    while received < sent && quiet_since.elapsed() < wait {
        let before = received;
        collect(&mut seen, &mut received);
        if received > before {
            quiet_since = Instant::now();
        }
    }
    println!("sent={sent} received={received} send_errors={send_errors}");
    Ok(())
}

/// Connects with a timeout and checks that one line comes back.
fn tcp(target: &str, timeout_ms: &str) -> Result<(), String> {
    let target: SocketAddr = parse("target", target)?;
    let timeout = Duration::from_millis(parse("timeout", timeout_ms)?);
    let mut stream = match TcpStream::connect_timeout(&target, timeout) {
        Ok(stream) => stream,
        Err(e) => {
            println!("connected=false echoed=false error={}", e.kind());
            return Ok(());
        }
    };
    let message = b"cpl-lab-probe\n";
    let mut echo = [0u8; 14];
    let outcome = stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.write_all(message))
        .and_then(|()| stream.read_exact(&mut echo));
    match outcome {
        Ok(()) => println!("connected=true echoed={}", &echo == message),
        Err(e) => println!("connected=true echoed=false error={}", e.kind()),
    }
    Ok(())
}
