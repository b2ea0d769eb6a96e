// The /demo/web page of `cloudproxy up`: one user of one channel. Open it in two tabs, pick
// a mode in each, join, and watch the events, the path in use and the RTT.
import { createClient } from "/web/cloudproxy.js";

const TEXT = {
  en: {
    title: "cloudproxy web demo", channel: "Channel", mode: "Mode",
    auto: "Auto (direct, proxy fallback)", udp: "Force UDP — startProxyServer(3)",
    tcp: "Force TCP — startProxyServer(5)", join: "Join", leave: "Leave", state: "State",
    path: "Path in use", proxy: "Using the cloud proxy", rtt: "RTT", members: "Members",
    received: "Messages received", send: "Send", events: "Events", messages: "Messages",
    yes: "yes", no: "no",
  },
  ja: {
    title: "cloudproxy ウェブデモ", channel: "チャンネル", mode: "モード",
    auto: "Auto（直接接続、失敗時にプロキシ）", udp: "Force UDP — startProxyServer(3)",
    tcp: "Force TCP — startProxyServer(5)", join: "参加", leave: "退出", state: "状態",
    path: "使用中の経路", proxy: "クラウドプロキシ使用", rtt: "往復遅延", members: "メンバー",
    received: "受信メッセージ", send: "送信", events: "イベント", messages: "メッセージ",
    yes: "はい", no: "いいえ",
  },
};

const root = document.getElementById("demo");
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const lang = (params.get("lang") || navigator.language || "en").toLowerCase().startsWith("ja") ? "ja" : "en";
const t = TEXT[lang];
document.documentElement.lang = lang;
for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t[el.dataset.i18n];

const cfg = root.dataset;
const uid = Number(cfg.uid);
const client = createClient({ control: location.origin, media: cfg.media, region: cfg.region });
const events = [];
const received = [];

function log(name, ...args) {
  events.push({ name, args, at: Math.round(performance.now()) });
  const li = document.createElement("li");
  li.textContent = `${name} ${args.map((a) => JSON.stringify(a)).join(" ")}`;
  $("events").prepend(li);
}

for (const name of ["is-using-cloud-proxy", "proxy-connected", "join-fallback-to-proxy", "error"]) {
  client.on(name, (...args) => log(name, ...args.map((a) => (a instanceof Error ? a.message : a))));
}
client.on("connection-state-change", (state, prev, reason) => {
  $("state").textContent = `${state} (${reason})`;
  log("connection-state-change", state, prev, reason);
});
client.on("is-using-cloud-proxy", (using) => ($("using").textContent = using ? t.yes : t.no));
client.on("rtt", (ms) => ($("rtt").textContent = `${ms.toFixed(1)} ms`));
client.on("message", (m) => {
  const text = new TextDecoder().decode(m.data);
  received.push({ from: m.from, seq: m.seq, text });
  $("received").textContent = String(received.length);
  const li = document.createElement("li");
  li.textContent = `uid ${m.from} #${m.seq}: ${text}`;
  $("messages").prepend(li);
  while ($("messages").children.length > 20) $("messages").lastChild.remove();
});

let pinger = null;

async function join() {
  const mode = Number($("mode").value);
  try {
    if (mode === 0) client.stopProxyServer();
    else {
      client.stopProxyServer();
      client.startProxyServer(mode);
    }
    $("join").disabled = true;
    $("mode").disabled = true;
    const info = await client.join(cfg.channel, uid, cfg.token);
    log("joined", { path: info.path.name, seenAs: info.seenAs, elapsedMs: info.elapsedMs });
    $("path").textContent = `${info.path.name} — ${info.path.localAddress} → ${info.path.remoteAddress}`;
    $("members").textContent = String(info.members);
    $("leave").disabled = false;
    $("send").disabled = false;
    const tick = () => client.ping().catch(() => {});
    tick();
    pinger = setInterval(tick, 1000);
    return info;
  } catch (e) {
    log("join-failed", e.code, e.message);
    $("join").disabled = false;
    $("mode").disabled = false;
    throw e;
  }
}

async function leave() {
  clearInterval(pinger);
  await client.leave();
  $("join").disabled = false;
  $("mode").disabled = false;
  $("leave").disabled = true;
  $("send").disabled = true;
  $("path").textContent = "—";
}

$("join").addEventListener("click", () => join().catch(() => {}));
$("leave").addEventListener("click", () => leave());
$("send").addEventListener("click", () => client.send($("text").value));

// For tests and the curious: the page's client and what it saw.
window.demo = { client, events, received, join, leave, uid };
