//! Exports of an [`AllowList`]: CSV, nftables, iptables and a plain HTML page (JSON is the
//! serde form of [`AllowList`] itself). Pure functions from a table to text.

use std::fmt::Write as _;

use super::{AllowList, Row};
use crate::model::Region;

/// The export formats of `GET /v1/allowlist/{region}?format=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The table as JSON (the default).
    Json,
    /// One line per service and address, for spreadsheets and firewall import tools.
    Csv,
    /// An nftables ruleset that accepts the published addresses and ports.
    Nftables,
    /// iptables rules that accept the published addresses and ports.
    Iptables,
}

impl Format {
    /// The format a `format=` query value names (`nft` is short for `nftables`).
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "json" => Format::Json,
            "csv" => Format::Csv,
            "nftables" | "nft" => Format::Nftables,
            "iptables" => Format::Iptables,
            _ => return None,
        })
    }

    /// The `Content-Type` the format is served with.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Nftables | Format::Iptables => "text/plain; charset=utf-8",
        }
    }
}

fn header(list: &AllowList, comment: &str) -> String {
    format!(
        "{comment} cloudproxy allow-list: region {} ({}), version {}, effective {}\n",
        list.region.as_str(),
        list.region.display_name(),
        list.version,
        list.effective_date
    )
}

/// `service,ips,protocol,ports` with one line per row; addresses and ports are separated by
/// spaces inside their field.
pub fn csv(list: &AllowList) -> String {
    let mut out = String::from("service,ips,protocol,ports\n");
    for row in &list.rows {
        let _ = writeln!(
            out,
            "{},{},{},{}",
            row.service.as_str(),
            row.ips.join(" "),
            row.protocol.as_str(),
            ports(row, " ")
        );
    }
    out
}

fn ports(row: &Row, sep: &str) -> String {
    row.ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}

/// Splits a row's addresses into IPv4 and IPv6.
fn families(row: &Row) -> (Vec<&str>, Vec<&str>) {
    row.ips
        .iter()
        .map(String::as_str)
        .partition(|ip| !ip.contains(':'))
}

/// The chain name both firewall exports use, e.g. `cloudproxy_japan`.
pub fn chain_name(region: Region) -> String {
    format!("cloudproxy_{}", region.as_str())
}

/// An nftables file (`nft -f`): a regular chain `cloudproxy_<region>` in `table inet filter`
/// that accepts traffic to the published relays. Loading it adds to an existing
/// `inet filter` table; the operator's egress chains then `jump` to it.
pub fn nftables(list: &AllowList) -> String {
    let chain = chain_name(list.region);
    let mut out = header(list, "#");
    let _ = writeln!(
        out,
        "# Load with `nft -f FILE`, then send egress traffic through the chain, e.g.\n\
         #   nft add rule inet filter forward jump {chain}\n\
         #   nft add rule inet filter output jump {chain}\n\
         table inet filter {{\n\tchain {chain} {{"
    );
    for row in &list.rows {
        let (v4, v6) = families(row);
        for (family, ips) in [("ip", v4), ("ip6", v6)] {
            if ips.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "\t\t{family} daddr {{ {} }} {} dport {{ {} }} accept comment \"{}\"",
                ips.join(", "),
                row.protocol.as_str(),
                ports(row, ", "),
                row.service.label()
            );
        }
    }
    out.push_str("\t}\n}\n");
    out
}

/// Shell commands for iptables/ip6tables: a chain `CLOUDPROXY_<REGION>` with one ACCEPT rule
/// per address block, which the operator's egress chains then jump to.
pub fn iptables(list: &AllowList) -> String {
    let chain = chain_name(list.region).to_ascii_uppercase();
    let mut out = header(list, "#");
    let _ = writeln!(
        out,
        "# Paste into a root shell, then send egress traffic through the chain, e.g.\n\
         #   iptables -A FORWARD -j {chain}\n\
         #   ip6tables -A FORWARD -j {chain}"
    );
    let mut v4_rules = Vec::new();
    let mut v6_rules = Vec::new();
    for row in &list.rows {
        let (v4, v6) = families(row);
        // multiport takes at most 15 ports per rule.
        for chunk in row.ports.chunks(15) {
            let ports = chunk
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",");
            for (rules, ips) in [(&mut v4_rules, &v4), (&mut v6_rules, &v6)] {
                for ip in ips {
                    rules.push(format!(
                        "-A {chain} -d {ip} -p {proto} -m multiport --dports {ports} \
                         -m comment --comment \"{label}\" -j ACCEPT",
                        proto = row.protocol.as_str(),
                        label = row.service.label()
                    ));
                }
            }
        }
    }
    for (tool, rules) in [("iptables", v4_rules), ("ip6tables", v6_rules)] {
        if rules.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{tool} -N {chain} 2>/dev/null || {tool} -F {chain}");
        for rule in rules {
            let _ = writeln!(out, "{tool} {rule}");
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A plain HTML page with every region's current table.
pub fn html(lists: &[AllowList]) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
         <title>cloudproxy allow-list</title></head>\n<body>\n<h1>cloudproxy allow-list</h1>\n\
         <p>Open these destinations for Force UDP and Force TCP clients. Each region's table \
         is also available as <a href=\"/v1/allowlist\">JSON</a> and, per region, as CSV, \
         nftables and iptables exports.</p>\n",
    );
    for list in lists {
        let slug = list.region.as_str();
        let _ = writeln!(
            out,
            "<h2 id=\"{slug}\">{}</h2>\n<p>Version {}, effective {}. Export: \
             <a href=\"/v1/allowlist/{slug}?format=json\">JSON</a> \
             <a href=\"/v1/allowlist/{slug}?format=csv\">CSV</a> \
             <a href=\"/v1/allowlist/{slug}?format=nftables\">nftables</a> \
             <a href=\"/v1/allowlist/{slug}?format=iptables\">iptables</a> \
             <a href=\"/v1/allowlist/{slug}/history\">history</a></p>",
            escape(list.region.display_name()),
            list.version,
            escape(&list.effective_date)
        );
        if list.rows.is_empty() {
            out.push_str("<p>No published relays.</p>\n");
            continue;
        }
        out.push_str(
            "<table border=\"1\">\n<tr><th>Service type</th><th>IP addresses</th>\
             <th>Protocol</th><th>Ports</th></tr>\n",
        );
        for row in &list.rows {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(row.service.label()),
                escape(&row.ips.join("<br>")).replace("&lt;br&gt;", "<br>"),
                row.protocol.as_str().to_ascii_uppercase(),
                ports(row, ", ")
            );
        }
        out.push_str("</table>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allowlist::{row, Service};

    fn sample() -> AllowList {
        AllowList {
            region: Region::Japan,
            version: 3,
            created_at: 0,
            effective_at: 0,
            effective_date: "1970-01-01T00:00:00Z".into(),
            rows: vec![
                row(
                    Service::ForceUdp,
                    &["203.0.113.10/31", "2001:db8::1"],
                    &[3478],
                ),
                row(Service::ForceTcp, &["203.0.113.10/31"], &[443, 5349]),
            ],
            changes: vec![],
        }
    }

    #[test]
    fn csv_has_one_line_per_row() {
        assert_eq!(
            csv(&sample()),
            "service,ips,protocol,ports\n\
             force_udp,203.0.113.10/31 2001:db8::1,udp,3478\n\
             force_tcp,203.0.113.10/31,tcp,443 5349\n"
        );
    }

    #[test]
    fn nftables_splits_families() {
        let text = nftables(&sample());
        assert!(
            text.contains("table inet filter {\n\tchain cloudproxy_japan {"),
            "{text}"
        );
        assert!(text.contains(
            "ip daddr { 203.0.113.10/31 } udp dport { 3478 } accept comment \"Force UDP (TURN over UDP)\""
        ));
        assert!(text.contains("ip6 daddr { 2001:db8::1 } udp dport { 3478 } accept"));
        assert!(text.contains("ip daddr { 203.0.113.10/31 } tcp dport { 443, 5349 } accept"));
        assert!(text.ends_with("\t}\n}\n"));
    }

    #[test]
    fn iptables_one_rule_per_block() {
        let text = iptables(&sample());
        assert!(text
            .contains("iptables -N CLOUDPROXY_JAPAN 2>/dev/null || iptables -F CLOUDPROXY_JAPAN"));
        assert!(text.contains(
            "iptables -A CLOUDPROXY_JAPAN -d 203.0.113.10/31 -p tcp -m multiport --dports 443,5349"
        ));
        assert!(text.contains("ip6tables -A CLOUDPROXY_JAPAN -d 2001:db8::1 -p udp"));
        assert_eq!(text.matches(" -j ACCEPT").count(), 3);
    }

    #[test]
    fn html_escapes_and_lists_rows() {
        let text = html(&[sample()]);
        assert!(text.contains("<h2 id=\"japan\">Japan</h2>"));
        assert!(text.contains("<td>203.0.113.10/31<br>2001:db8::1</td>"));
        assert!(text.contains("<td>443, 5349</td>"));
        assert_eq!(escape("<a&\"b\">"), "&lt;a&amp;&quot;b&quot;&gt;");
    }

    #[test]
    fn formats_parse() {
        assert_eq!(Format::parse("nft"), Some(Format::Nftables));
        assert_eq!(Format::parse("xml"), None);
    }
}
