// The relay's XDP fast path for ChannelData over UDP (RFC 8656 §12), IPv4 and IPv6.
//
// Client -> peer: a ChannelData datagram to one of the relay's listeners whose (client,
// listener, channel) has an entry in `c2p` loses its 4-byte header and leaves from the
// allocation's relayed address toward the peer. Peer -> client: a datagram to a relayed
// address from a peer with an entry in `p2c` gains the header and leaves from the listener the
// client used. Both go back out of the interface they came in on (XDP_TX), MAC addresses
// swapped: client and peer are reached through the same next hop.
//
// Everything else passes to the kernel unchanged (XDP_PASS), to the relay's sockets: STUN,
// Send/Data indications, padded or short frames, unknown tuples, expired entries, IP options,
// fragments, IPv6 extension headers. User space decides everything; this program only
// follows the entries the relay installs and removes.
//
// Checksums: the IPv4 header checksum is recomputed; the UDP checksum is updated
// incrementally (addresses, ports, length, and the 4 header bytes removed or added), so it
// stays correct end to end. An IPv4 datagram without a UDP checksum (0) keeps none; over IPv6
// the checksum is mandatory, and a datagram without one goes to the socket path.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define MAX_ENTRIES 65536
#define HDRS (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr))
#define HDRS6 (sizeof(struct ethhdr) + sizeof(struct ipv6hdr) + sizeof(struct udphdr))
// A direction's answer before it touched the packet: let the other direction look.
#define NOT_MINE -1

// Addresses and ports in network byte order, as on the wire; `channel` too.
struct c2p_key {
	__u32 client_ip;
	__u32 listener_ip;
	__u16 client_port;
	__u16 listener_port;
	__u16 channel;
	__u16 pad;
};

struct c2p_val {
	__u32 relay_ip;
	__u32 peer_ip;
	__u16 relay_port;
	__u16 peer_port;
	__u32 counter;
	__u64 expires_ns;
};

struct p2c_key {
	__u32 peer_ip;
	__u32 relay_ip;
	__u16 peer_port;
	__u16 relay_port;
};

struct p2c_val {
	__u32 client_ip;
	__u32 listener_ip;
	__u16 client_port;
	__u16 listener_port;
	__u16 channel;
	__u16 pad;
	__u32 counter;
	__u32 pad2;
	__u64 expires_ns;
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENTRIES);
	__type(key, struct c2p_key);
	__type(value, struct c2p_val);
} c2p SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENTRIES);
	__type(key, struct p2c_key);
	__type(value, struct p2c_val);
} p2c SEC(".maps");

// Payload packets and bytes per entry (its `counter` index), per CPU.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * MAX_ENTRIES);
	__type(key, __u32);
	__type(value, struct counter);
} counters SEC(".maps");

// IPv6: the same entries with 16-byte addresses.
struct c2p6_key {
	__u8 client_ip[16];
	__u8 listener_ip[16];
	__u16 client_port;
	__u16 listener_port;
	__u16 channel;
	__u16 pad;
};

struct c2p6_val {
	__u8 relay_ip[16];
	__u8 peer_ip[16];
	__u16 relay_port;
	__u16 peer_port;
	__u32 counter;
	__u64 expires_ns;
};

struct p2c6_key {
	__u8 peer_ip[16];
	__u8 relay_ip[16];
	__u16 peer_port;
	__u16 relay_port;
};

struct p2c6_val {
	__u8 client_ip[16];
	__u8 listener_ip[16];
	__u16 client_port;
	__u16 listener_port;
	__u16 channel;
	__u16 pad;
	__u32 counter;
	__u32 pad2;
	__u64 expires_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENTRIES);
	__type(key, struct c2p6_key);
	__type(value, struct c2p6_val);
} c2p6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENTRIES);
	__type(key, struct p2c6_key);
	__type(value, struct p2c6_val);
} p2c6 SEC(".maps");

struct pair16 {
	__u16 a;
	__u16 b;
};

static __always_inline __u32 word(__u16 a, __u16 b)
{
	struct pair16 p = { a, b };
	return *(__u32 *)&p;
}

static __always_inline __u16 fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

static __always_inline void ip_checksum(struct iphdr *ip)
{
	__u16 *w = (__u16 *)ip;
	__u64 sum = 0;
	ip->check = 0;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	ip->check = ~fold(sum);
}

// The UDP checksum after `from` (old words, memory order) became `to`.
static __always_inline __u16 udp_checksum(__u16 old, __u32 *from, __u32 from_size, __u32 *to,
					  __u32 to_size)
{
	if (old == 0)
		return 0;
	__s64 d = bpf_csum_diff(from, from_size, to, to_size, (__u16)~old);
	if (d < 0)
		return 0;
	__u16 c = ~fold((__u64)(__u32)d);
	return c ? c : 0xffff;
}

static __always_inline void count(__u32 index, __u64 bytes)
{
	struct counter *c = bpf_map_lookup_elem(&counters, &index);
	if (c) {
		c->packets += 1;
		c->bytes += bytes;
	}
}

static __always_inline void swap_mac(struct ethhdr *eth)
{
	unsigned char tmp[ETH_ALEN];
	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
}

// The ChannelData header at the start of the UDP payload, if the datagram is exactly one
// frame (a padded or short one goes to the socket path). Channel in network order.
static __always_inline int channel_frame(struct udphdr *udp, void *data_end, __u16 *channel,
					 __u16 *len)
{
	__u8 *cd = (__u8 *)(udp + 1);
	if ((void *)(cd + 4) > data_end)
		return -1;
	*channel = *(__u16 *)cd;
	*len = bpf_ntohs(*(__u16 *)(cd + 2));
	__u16 hchan = bpf_ntohs(*channel);
	if (hchan < 0x4000 || hchan > 0x7ffe)
		return -1;
	if (bpf_ntohs(udp->len) != sizeof(struct udphdr) + 4 + *len)
		return -1;
	return 0;
}

// Moves the first `hdrs` bytes (Ethernet, IP and UDP headers) by `delta` bytes: +4 drops the
// ChannelData header that follows them, -4 makes room for one (written as `chdr`). Returns 0,
// or the verdict when the packet cannot be reshaped (XDP_PASS if nothing changed yet).
static __always_inline int reshape(struct xdp_md *ctx, const int hdrs, const int delta, __u32 chdr)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 saved[HDRS6];
	if (data + hdrs > data_end)
		return XDP_PASS;
	__builtin_memcpy(saved, data, hdrs);
	if (bpf_xdp_adjust_head(ctx, delta))
		return XDP_PASS;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + hdrs + (delta < 0 ? 4 : 0) > data_end)
		return XDP_DROP;
	__builtin_memcpy(data, saved, hdrs);
	if (delta < 0)
		*(__u32 *)(data + hdrs) = chdr;
	return 0;
}

static __always_inline void set_udp(struct udphdr *udp, __u16 source, __u16 dest, __u16 len,
				    __u16 check)
{
	udp->source = source;
	udp->dest = dest;
	udp->len = len;
	udp->check = check;
}

static __always_inline int client_to_peer(struct xdp_md *ctx, struct iphdr *ip, struct udphdr *udp,
					  void *data_end)
{
	__u16 channel, len;
	if (channel_frame(udp, data_end, &channel, &len))
		return NOT_MINE;
	struct c2p_key k = {
		.client_ip = ip->saddr,
		.listener_ip = ip->daddr,
		.client_port = udp->source,
		.listener_port = udp->dest,
		.channel = channel,
	};
	struct c2p_val *v = bpf_map_lookup_elem(&c2p, &k);
	if (!v || bpf_ktime_get_ns() >= v->expires_ns)
		return NOT_MINE;
	struct c2p_val e = *v;
	__u16 new_len = bpf_htons(sizeof(struct udphdr) + len);
	__u32 from[5] = { ip->saddr, ip->daddr, word(udp->source, udp->dest),
			  word(udp->len, udp->len), word(channel, bpf_htons(len)) };
	__u32 to[4] = { e.relay_ip, e.peer_ip, word(e.relay_port, e.peer_port),
			word(new_len, new_len) };
	__u16 check = udp_checksum(udp->check, from, sizeof(from), to, sizeof(to));

	int r = reshape(ctx, HDRS, 4, 0);
	if (r)
		return r;
	void *data = (void *)(long)ctx->data;
	if (data + HDRS > (void *)(long)ctx->data_end)
		return XDP_DROP;
	struct ethhdr *eth = data;
	ip = (struct iphdr *)(eth + 1);
	swap_mac(eth);
	ip->saddr = e.relay_ip;
	ip->daddr = e.peer_ip;
	ip->tot_len = bpf_htons(bpf_ntohs(ip->tot_len) - 4);
	ip->ttl = 64;
	ip_checksum(ip);
	set_udp((struct udphdr *)(ip + 1), e.relay_port, e.peer_port, new_len, check);
	// Counted only once it is sure to leave here: the socket path counts everything else.
	count(e.counter, len);
	return XDP_TX;
}

static __always_inline int peer_to_client(struct xdp_md *ctx, struct iphdr *ip, struct udphdr *udp,
					  void *data_end)
{
	struct p2c_key k = {
		.peer_ip = ip->saddr,
		.relay_ip = ip->daddr,
		.peer_port = udp->source,
		.relay_port = udp->dest,
	};
	struct p2c_val *v = bpf_map_lookup_elem(&p2c, &k);
	if (!v || bpf_ktime_get_ns() >= v->expires_ns)
		return NOT_MINE;
	struct p2c_val e = *v;
	__u16 payload = bpf_ntohs(udp->len) - sizeof(struct udphdr);
	// Shorter than a UDP header, or longer than a ChannelData length can say: socket path.
	if (bpf_ntohs(udp->len) < sizeof(struct udphdr) ||
	    payload > 0xffff - 4 - sizeof(struct udphdr))
		return NOT_MINE;
	__u16 new_len = bpf_htons(sizeof(struct udphdr) + 4 + payload);
	__u32 chdr = word(e.channel, bpf_htons(payload));
	__u32 from[4] = { ip->saddr, ip->daddr, word(udp->source, udp->dest),
			  word(udp->len, udp->len) };
	__u32 to[5] = { e.listener_ip, e.client_ip, word(e.listener_port, e.client_port),
			word(new_len, new_len), chdr };
	__u16 check = udp_checksum(udp->check, from, sizeof(from), to, sizeof(to));

	int r = reshape(ctx, HDRS, -4, chdr);
	if (r)
		return r;
	void *data = (void *)(long)ctx->data;
	if (data + HDRS > (void *)(long)ctx->data_end)
		return XDP_DROP;
	struct ethhdr *eth = data;
	ip = (struct iphdr *)(eth + 1);
	swap_mac(eth);
	ip->saddr = e.listener_ip;
	ip->daddr = e.client_ip;
	ip->tot_len = bpf_htons(bpf_ntohs(ip->tot_len) + 4);
	ip->ttl = 64;
	ip_checksum(ip);
	set_udp((struct udphdr *)(ip + 1), e.listener_port, e.client_port, new_len, check);
	count(e.counter, payload);
	return XDP_TX;
}

static __always_inline int client_to_peer6(struct xdp_md *ctx, struct ipv6hdr *ip,
					   struct udphdr *udp, void *data_end)
{
	__u16 channel, len;
	if (channel_frame(udp, data_end, &channel, &len) || udp->check == 0)
		return NOT_MINE;
	struct c2p6_key k = {
		.client_port = udp->source,
		.listener_port = udp->dest,
		.channel = channel,
	};
	__builtin_memcpy(k.client_ip, &ip->saddr, 16);
	__builtin_memcpy(k.listener_ip, &ip->daddr, 16);
	struct c2p6_val *v = bpf_map_lookup_elem(&c2p6, &k);
	if (!v || bpf_ktime_get_ns() >= v->expires_ns)
		return NOT_MINE;
	struct c2p6_val e = *v;
	__u16 new_len = bpf_htons(sizeof(struct udphdr) + len);
	__u32 from[11], to[10];
	__builtin_memcpy(from, &ip->saddr, 32);
	from[8] = word(udp->source, udp->dest);
	from[9] = word(udp->len, udp->len);
	from[10] = word(channel, bpf_htons(len));
	__builtin_memcpy(to, e.relay_ip, 16);
	__builtin_memcpy(&to[4], e.peer_ip, 16);
	to[8] = word(e.relay_port, e.peer_port);
	to[9] = word(new_len, new_len);
	__u16 check = udp_checksum(udp->check, from, sizeof(from), to, sizeof(to));

	int r = reshape(ctx, HDRS6, 4, 0);
	if (r)
		return r;
	void *data = (void *)(long)ctx->data;
	if (data + HDRS6 > (void *)(long)ctx->data_end)
		return XDP_DROP;
	struct ethhdr *eth = data;
	ip = (struct ipv6hdr *)(eth + 1);
	swap_mac(eth);
	__builtin_memcpy(&ip->saddr, e.relay_ip, 16);
	__builtin_memcpy(&ip->daddr, e.peer_ip, 16);
	ip->payload_len = new_len;
	ip->hop_limit = 64;
	set_udp((struct udphdr *)(ip + 1), e.relay_port, e.peer_port, new_len, check);
	count(e.counter, len);
	return XDP_TX;
}

static __always_inline int peer_to_client6(struct xdp_md *ctx, struct ipv6hdr *ip,
					   struct udphdr *udp, void *data_end)
{
	if (udp->check == 0)
		return NOT_MINE;
	struct p2c6_key k = {
		.peer_port = udp->source,
		.relay_port = udp->dest,
	};
	__builtin_memcpy(k.peer_ip, &ip->saddr, 16);
	__builtin_memcpy(k.relay_ip, &ip->daddr, 16);
	struct p2c6_val *v = bpf_map_lookup_elem(&p2c6, &k);
	if (!v || bpf_ktime_get_ns() >= v->expires_ns)
		return NOT_MINE;
	struct p2c6_val e = *v;
	__u16 payload = bpf_ntohs(udp->len) - sizeof(struct udphdr);
	if (bpf_ntohs(udp->len) < sizeof(struct udphdr) ||
	    payload > 0xffff - 4 - sizeof(struct udphdr))
		return NOT_MINE;
	__u16 new_len = bpf_htons(sizeof(struct udphdr) + 4 + payload);
	__u32 chdr = word(e.channel, bpf_htons(payload));
	__u32 from[10], to[11];
	__builtin_memcpy(from, &ip->saddr, 32);
	from[8] = word(udp->source, udp->dest);
	from[9] = word(udp->len, udp->len);
	__builtin_memcpy(to, e.listener_ip, 16);
	__builtin_memcpy(&to[4], e.client_ip, 16);
	to[8] = word(e.listener_port, e.client_port);
	to[9] = word(new_len, new_len);
	to[10] = chdr;
	__u16 check = udp_checksum(udp->check, from, sizeof(from), to, sizeof(to));

	int r = reshape(ctx, HDRS6, -4, chdr);
	if (r)
		return r;
	void *data = (void *)(long)ctx->data;
	if (data + HDRS6 > (void *)(long)ctx->data_end)
		return XDP_DROP;
	struct ethhdr *eth = data;
	ip = (struct ipv6hdr *)(eth + 1);
	swap_mac(eth);
	__builtin_memcpy(&ip->saddr, e.listener_ip, 16);
	__builtin_memcpy(&ip->daddr, e.client_ip, 16);
	ip->payload_len = new_len;
	ip->hop_limit = 64;
	set_udp((struct udphdr *)(ip + 1), e.listener_port, e.client_port, new_len, check);
	count(e.counter, payload);
	return XDP_TX;
}

static __always_inline int ipv6(struct xdp_md *ctx, void *data_end, struct ethhdr *eth)
{
	struct ipv6hdr *ip = (struct ipv6hdr *)(eth + 1);
	// Extension headers (fragments among them) go to the kernel.
	if ((void *)(ip + 1) > data_end || ip->nexthdr != IPPROTO_UDP)
		return XDP_PASS;
	struct udphdr *udp = (struct udphdr *)(ip + 1);
	if ((void *)(udp + 1) > data_end)
		return XDP_PASS;
	if (bpf_ntohs(ip->payload_len) != bpf_ntohs(udp->len) ||
	    (void *)udp + bpf_ntohs(udp->len) != data_end)
		return XDP_PASS;
	int r = client_to_peer6(ctx, ip, udp, data_end);
	if (r != NOT_MINE)
		return r;
	r = peer_to_client6(ctx, ip, udp, data_end);
	return r == NOT_MINE ? XDP_PASS : r;
}

SEC("xdp")
int relay_fast_path(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return ipv6(ctx, data_end, eth);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct iphdr *ip = (struct iphdr *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return XDP_PASS;
	// Fragments (MF set or an offset) go to the kernel to be reassembled.
	if (ip->frag_off & bpf_htons(0x3fff))
		return XDP_PASS;
	struct udphdr *udp = (struct udphdr *)(ip + 1);
	if ((void *)(udp + 1) > data_end)
		return XDP_PASS;
	// The UDP length must match what arrived (no trailing bytes, nothing cut).
	if ((void *)udp + bpf_ntohs(udp->len) != data_end)
		return XDP_PASS;
	int r = client_to_peer(ctx, ip, udp, data_end);
	if (r != NOT_MINE)
		return r;
	r = peer_to_client(ctx, ip, udp, data_end);
	return r == NOT_MINE ? XDP_PASS : r;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
