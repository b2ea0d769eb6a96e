//! The console's words in English and Japanese.
//!
//! Every string a page shows is a field of [`Text`], and [`EN`] and [`JA`] are two values of
//! it: a string missing in one language does not compile. The language comes from `?lang=`
//! (which also sets the `lang` cookie: the switch in every page's header), then the cookie,
//! then `Accept-Language` (the first of `ja` or `en` by quality), then English.

use crate::model::{AppStatus, Mode, Pool, QualityTier, Region, RequestState, Sdk, UsageMode};

/// A language of the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lang {
    /// English, the default.
    En,
    /// Japanese.
    Ja,
}

impl Lang {
    /// The language's BCP 47 code (`en`, `ja`), for `lang=` and the cookie.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ja => "ja",
        }
    }

    /// The language a code names, if the console has it.
    pub(crate) fn parse(s: &str) -> Option<Lang> {
        match s.trim() {
            "en" => Some(Lang::En),
            "ja" => Some(Lang::Ja),
            _ => None,
        }
    }

    /// Every string of the console in this language.
    pub(crate) fn text(self) -> &'static Text {
        match self {
            Lang::En => &EN,
            Lang::Ja => &JA,
        }
    }

    /// The language a request asks for: `?lang=`, then the `lang` cookie, then
    /// `Accept-Language`, then English.
    pub(crate) fn choose(
        query_lang: Option<&str>,
        cookie: Option<&str>,
        accept: Option<&str>,
    ) -> Lang {
        query_lang
            .and_then(Lang::parse)
            .or_else(|| cookie.and_then(Lang::parse))
            .or_else(|| accept.and_then(from_accept_language))
            .unwrap_or(Lang::En)
    }
}

/// The supported language with the highest quality in an `Accept-Language` header
/// (RFC 9110 §12.5.4): `ja-JP,ja;q=0.9,en;q=0.8` is Japanese, `en-US,ja;q=0.5` English.
pub(super) fn from_accept_language(header: &str) -> Option<Lang> {
    let mut best: Option<(f32, Lang)> = None;
    for item in header.split(',') {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|v| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let primary = tag.split('-').next().unwrap_or("");
        let Some(lang) = Lang::parse(primary) else {
            continue;
        };
        if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, lang));
        }
    }
    best.map(|(_, l)| l)
}

macro_rules! texts {
    ($($field:ident: $en:literal, $ja:literal;)+) => {
        /// Every string of the console, in one language.
        #[derive(Debug)]
        pub(crate) struct Text {
            $(#[doc = $en] pub(crate) $field: &'static str,)+
        }
        /// English.
        pub(crate) static EN: Text = Text { $($field: $en,)+ };
        /// Japanese.
        pub(crate) static JA: Text = Text { $($field: $ja,)+ };
    };
}

texts! {
    product: "cloudproxy console", "cloudproxy コンソール";
    language: "Language", "言語";
    sign_in: "Sign in", "サインイン";
    sign_out: "Sign out", "サインアウト";
    sign_in_intro: "Sign in with the operator key or an app owner's API key. The key is exchanged for a session; it is not kept in the browser.",
        "オペレーターキー、またはアプリオーナーの API キーでサインインします。キーはセッションに交換され、ブラウザーには保存されません。";
    api_key: "API key", "API キー";
    bad_key: "That key was not accepted.", "このキーは受け付けられませんでした。";
    signed_in_as: "Signed in as", "サインイン中:";
    operator: "operator", "オペレーター";
    owner: "Owner", "オーナー";
    nav_apps: "Apps", "アプリ";
    nav_requests: "Enablement requests", "有効化申請";
    nav_regions: "Regions and relays", "リージョンとリレー";
    nav_usage: "Usage", "利用状況";
    nav_allowlist: "Allow-list", "許可リスト";
    apps_intro: "Applications and their secrets. A secret is shown once, when it is made.",
        "アプリケーションとそのシークレット。シークレットは作成時に一度だけ表示されます。";
    name: "Name", "名前";
    app_id: "App ID", "App ID";
    status: "Status", "状態";
    created: "Created", "作成日時";
    keys: "Keys", "キー";
    key_id: "Key ID", "キー ID";
    not_after: "Valid until", "有効期限";
    current: "current", "現行";
    actions: "Actions", "操作";
    create_app: "Create an app", "アプリを作成";
    create: "Create", "作成";
    owner_none: "(the operator's own)", "(オペレーター自身)";
    no_apps: "No apps yet.", "アプリはまだありません。";
    secret_once: "Copy the secret now: it is shown only this once.",
        "シークレットを今すぐコピーしてください。表示されるのはこの一度だけです。";
    secret: "Secret", "シークレット";
    back_to_app: "Back to the app", "アプリに戻る";
    rotate: "Rotate the secret", "シークレットを更新";
    grace_seconds: "Old keys keep working for (seconds)", "旧キーの猶予期間 (秒)";
    suspend: "Suspend", "一時停止";
    resume: "Resume", "再開";
    app_status_active: "active", "有効";
    app_status_suspended: "suspended", "停止中";
    pool_static: "static (Force modes, published)", "静的 (Force モード・公開)";
    pool_dynamic: "dynamic (Auto)", "動的 (Auto)";
    requests_intro: "The application form for Force UDP and Force TCP. Approval reserves bandwidth in the region and enables the mode.",
        "Force UDP / Force TCP の申請フォーム。承認するとリージョンの帯域が予約され、モードが有効になります。";
    new_request: "File a request", "申請する";
    app: "App", "アプリ";
    region: "Region", "リージョン";
    sdk: "SDK", "SDK";
    use_case: "Use case", "ユースケース";
    use_case_hint: "e.g. 1:1 video call, 1:N live broadcast", "例: 1 対 1 のビデオ通話、1 対 N のライブ配信";
    max_channels: "Maximum concurrent channels", "最大同時チャンネル数";
    max_users: "Maximum users per channel (proxy and non-proxy)", "チャンネルあたりの最大ユーザー数 (プロキシ利用者と非利用者の合計)";
    max_proxy_users: "Maximum proxy users per channel", "チャンネルあたりの最大プロキシユーザー数";
    quality: "Video quality", "映像品質";
    mode: "Mode", "モード";
    submit: "Submit", "送信";
    state: "State", "状態";
    estimate: "Estimate (kbit/s)", "見積もり (kbit/s)";
    reserved: "Reserved (kbit/s)", "予約済み (kbit/s)";
    reason: "Reason", "理由";
    approve: "Approve", "承認";
    reject: "Reject", "却下";
    revoke: "Revoke", "取り消し";
    activate: "Activate", "有効化";
    no_requests: "No requests yet.", "申請はまだありません。";
    need_an_app: "Create an app first.", "先にアプリを作成してください。";
    regions_intro: "Capacity per region and every registered relay, as their heartbeats report it.",
        "リージョンごとの容量と、ハートビートで報告された各リレーの状態。";
    static_capacity: "Static capacity (kbit/s)", "静的プール容量 (kbit/s)";
    available: "Available (kbit/s)", "空き (kbit/s)";
    relays: "Relays", "リレー";
    relay: "Relay", "リレー";
    pool: "Pool", "プール";
    health: "Health", "稼働状態";
    live: "live", "稼働中";
    silent: "silent", "応答なし";
    never: "never", "なし";
    last_heartbeat: "Last heartbeat", "最終ハートビート";
    sync_age: "Sync age", "同期からの経過";
    load: "Load / capacity (kbit/s)", "負荷 / 容量 (kbit/s)";
    allocations: "Allocations", "割り当て数";
    listeners: "Listeners", "リスナー";
    seconds_ago: "s ago", "秒前";
    no_relays: "No relays registered.", "登録されたリレーはありません。";
    usage_intro: "Relayed minutes per app, mode and day (UTC), as relays report them.",
        "アプリ・モード・日 (UTC) ごとの中継時間 (分)。リレーの報告に基づきます。";
    day: "Day", "日付";
    minutes: "Minutes", "分";
    bytes: "Bytes", "バイト";
    peak: "Peak concurrency", "最大同時接続数";
    no_usage: "No usage in this period.", "この期間の利用はありません。";
    download_csv: "Download CSV", "CSV をダウンロード";
    chart_title: "Minutes per day", "日ごとの利用時間 (分)";
    allowlist_title: "cloudproxy allow-list", "cloudproxy 許可リスト";
    allowlist_intro: "Open these destinations in your firewall for Force UDP and Force TCP clients. Auto-mode relays are never listed.",
        "Force UDP / Force TCP のクライアントのために、ファイアウォールでこれらの宛先を許可してください。Auto モードのリレーは掲載されません。";
    service_type: "Service type", "サービス種別";
    ip_addresses: "IP addresses", "IP アドレス";
    protocol: "Protocol", "プロトコル";
    ports: "Ports", "ポート";
    version: "Version", "バージョン";
    effective: "Effective", "適用開始";
    export: "Export", "エクスポート";
    history: "History", "履歴";
    no_published: "No published relays.", "公開中のリレーはありません。";
    changes: "Changes", "変更";
    added: "added", "追加";
    removed: "removed", "削除";
    upcoming: "announced", "予告";
    error_title: "Something went wrong", "エラーが発生しました";
    forbidden: "Your session may not do this.", "このセッションではこの操作はできません。";
    not_found: "Not found.", "見つかりません。";
    csrf_refused: "The form was refused: its security token is missing or belongs to another session. Reload the page and try again.",
        "フォームは拒否されました。セキュリティトークンがないか、別のセッションのものです。ページを再読み込みしてやり直してください。";
    invalid: "Please correct these fields:", "次の項目を修正してください:";
    operator_only: "Only the operator sees this view.", "この画面はオペレーターのみが表示できます。";
}

/// Region names as people read them.
pub(super) fn region(lang: Lang, r: Region) -> &'static str {
    match lang {
        Lang::En => r.display_name(),
        Lang::Ja => match r {
            Region::MainlandChina => "中国本土",
            Region::Europe => "ヨーロッパ",
            Region::India => "インド",
            Region::Japan => "日本",
            Region::NorthAmerica => "北米",
            Region::SoutheastAsia => "東南アジア",
        },
    }
}

/// A request's mode as the console names it.
pub(super) fn mode(lang: Lang, m: Mode) -> &'static str {
    usage_mode(lang, m.into())
}

/// A usage row's mode (Auto, Force UDP, Force TCP) as the console names it.
pub(super) fn usage_mode(lang: Lang, m: UsageMode) -> &'static str {
    match (lang, m) {
        (Lang::En, UsageMode::Auto) => "Auto",
        (Lang::Ja, UsageMode::Auto) => "自動 (Auto)",
        (_, UsageMode::ForceUdp) => "Force UDP",
        (_, UsageMode::ForceTcp) => "Force TCP",
    }
}

/// The SDK a request is for, as the console names it.
pub(super) fn sdk(lang: Lang, s: Sdk) -> &'static str {
    match (lang, s) {
        (Lang::En, Sdk::Native) => "Native",
        (Lang::Ja, Sdk::Native) => "ネイティブ",
        (_, Sdk::Web) => "Web",
    }
}

/// A quality tier as the console names it.
pub(super) fn quality(lang: Lang, q: QualityTier) -> &'static str {
    match (lang, q) {
        (Lang::En, QualityTier::AudioOnly) => "Audio only",
        (Lang::Ja, QualityTier::AudioOnly) => "音声のみ",
        (Lang::En, QualityTier::K2Plus) => "2K and above",
        (Lang::Ja, QualityTier::K2Plus) => "2K 以上",
        (_, q) => q.as_str(),
    }
}

/// An enablement request's state as the console names it.
pub(super) fn request_state(lang: Lang, s: RequestState) -> &'static str {
    use RequestState::*;
    match (lang, s) {
        (Lang::En, s) => s.as_str(),
        (Lang::Ja, Submitted) => "申請中",
        (Lang::Ja, Approved) => "承認済み",
        (Lang::Ja, Rejected) => "却下",
        (Lang::Ja, Active) => "有効",
        (Lang::Ja, Suspended) => "停止中",
        (Lang::Ja, Revoked) => "取り消し済み",
    }
}

/// An app's status (active, suspended) as the console names it.
pub(super) fn app_status(lang: Lang, s: AppStatus) -> &'static str {
    let t = lang.text();
    match s {
        AppStatus::Active => t.app_status_active,
        AppStatus::Suspended => t.app_status_suspended,
    }
}

/// A relay pool, with what it serves, as the console names it.
pub(super) fn pool(lang: Lang, p: Pool) -> &'static str {
    let t = lang.text();
    match p {
        Pool::Static => t.pool_static,
        Pool::Dynamic => t.pool_dynamic,
    }
}

/// An allow-list service (Force UDP, Force TCP) as the console names it.
pub(super) fn service(lang: Lang, s: crate::allowlist::Service) -> &'static str {
    use crate::allowlist::Service;
    match (lang, s) {
        (Lang::En, s) => s.label(),
        (Lang::Ja, Service::ForceUdp) => "Force UDP (UDP 上の TURN)",
        (Lang::Ja, Service::ForceTcp) => "Force TCP (TLS 上の TURN)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_best_supported() {
        assert_eq!(
            from_accept_language("ja-JP,ja;q=0.9,en;q=0.8"),
            Some(Lang::Ja)
        );
        assert_eq!(from_accept_language("en-US,ja;q=0.5"), Some(Lang::En));
        assert_eq!(from_accept_language("fr, ja;q=0.3"), Some(Lang::Ja));
        assert_eq!(from_accept_language("fr, de"), None);
        assert_eq!(from_accept_language("ja;q=0, en;q=0.1"), Some(Lang::En));
    }

    #[test]
    fn query_beats_cookie_beats_header() {
        assert_eq!(Lang::choose(Some("ja"), Some("en"), Some("en")), Lang::Ja);
        assert_eq!(Lang::choose(None, Some("ja"), Some("en")), Lang::Ja);
        assert_eq!(Lang::choose(Some("xx"), None, Some("ja")), Lang::Ja);
        assert_eq!(Lang::choose(None, None, None), Lang::En);
    }

    #[test]
    fn japanese_differs_where_it_should() {
        assert_ne!(EN.nav_apps, JA.nav_apps);
        assert_ne!(EN.sign_in, JA.sign_in);
        assert_eq!(region(Lang::Ja, Region::Japan), "日本");
    }
}
