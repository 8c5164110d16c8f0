// CityBrain operations view: four pages over the platform's JSON routes, charts and maps in Apache ECharts.
// Chinese first, English on the toggle. window.cb exposes the charts so the browser tests can check their data.
"use strict";

const T = {
  zh: {
    title: "城市大脑", city: "城市运行", hotline: "接诉即办", orders: "工单跟踪", data: "数据底座", security: "安全态势",
    login: "登录", logout: "退出", principal: "账号", password: "密码", code: "动态验证码",
    login_hint: "使用本人账号登录：密码加身份验证器应用（TOTP）的六位动态码。账号由数据局开通（citybrain accounts add）；每人只看本部门的授权范围，数据局可看全部。",
    layer: "感知图层", district: "区", street: "街道", area: "区域", community: "社区", grid: "网格", events: "城市事件与工单",
    evidence: "证据", overdue: "超时工单", contracts: "数据契约与主题", releases: "场景数据集发布",
    quarantine: "隔离区", findings: "安全发现", grants: "授权（谁能读什么）", audit_trail: "审计记录（哈希链）", audit_ok: "条审计记录，哈希链完整", audit_broken: "审计链断裂：", footer: "CityBrain 城市大脑 运行视图",
    open_events: "未关闭事件", warnings: "预警", orders: "工单", stages: "工单闭环各阶段",
    rates: "三率趋势（响应·解决·满意）", by_department: "各部门解决率", hotspots: "热点街道（诉求量）",
    response: "按时办结率", resolution: "解决率", satisfaction: "满意率", tickets: "工单数",
    throughput: "各主题入湖记录（每小时）", quality: "质量检查（分区）", by_kind: "安全发现（按类型）", by_day: "每日安全发现（按严重度）",
    passed: "通过", failed: "未通过", none: "暂无数据", ok: "正常", silent: "静默", fault: "故障",
    received: "受理", dispatched: "派单", accepted: "签收", handled: "办理", closed: "办结", followed_up: "回访", reopened: "重办",
    as_of: "数据截至", actual_reads: "实际读取（消费组及其提交的主题）", refused_logins: "运行视图的失败登录", by_district: "各区三率", department: "部门", level_or_title: "层级/事项", where: "区域", overdue_min: "超时（分钟）", groups: "消费组与积压", loading: "读取中…", in_lake: "入湖记录", on_broker: "主题记录", dead_letters: "死信原因", lag: "积压", failed_checks: "未通过的检查", data_docs: "质量数据文档（Great Expectations）",
    water_level: "水位", noise: "噪声", air_quality: "空气质量", traffic_flow: "交通流量", weather: "降水（气象站）",
    n_tickets: "{n} 件", n_followed_up: "回访 {n} 件",
    work_orders: "工单", all: "全部", status: "状态", only_overdue: "仅超时", search: "查询", search_hint: "工单号、诉求号或内容",
    ticket: "工单详情", timeline: "全流程", linked_events: "关联城市事件", deadline: "时限", received_at: "受理时间",
    work_order: "派单至部门", escalated: "升级", about_to_breach: "即将超时", breached: "已超时", open: "未关闭", updated: "更新",
    satisfied: "满意", basically_satisfied: "基本满意", dissatisfied: "不满意", resolved_yes: "已解决", resolved_no: "未解决",
    shown_of: "显示 {n} / 共 {total} 件", no_lifecycle: "本账号无权读取热线工单流转记录（raw.hotline.ticket_event），仅显示本部门工单。",
    pick_ticket: "点击工单查看全流程", by_escalation: "经属地升级", lead: "主办", support: "协办", matter: "事项",
    zone: "时区", beijing_time: "北京时间", utc_hint: "线上数据为 UTC；悬停时间可见 UTC 原值",
    rankings: "考核排名", rank: "名次", score: "得分", weights: "权重",
    tickets_today: "今日受理", whole_city: "全市", drill_hint: "点击区域逐级下钻", outside_remit: "本部门在此区域无工单，不可下钻",
    urge: "督办", whistle: "吹哨", actions: "督办与吹哨", summon: "召集部门（报到）", act_reason: "事由（勿写市民个人信息）",
    complexity: "复杂程度", simple: "一般（3个工作日反馈）", complex: "复杂（5个工作日反馈）", send: "发出", cancel: "取消",
    sign_deadline: "签收时限", contact_deadline: "联系时限", report_deadline: "反馈时限", issued_by: "发起人", departments: "部门",
    reason: "事由",
    replies: "部门报到", reply: "报到", reply_sign: "签收", reply_contact: "已联系", reply_report: "反馈",
    reply_note: "说明（反馈必填，勿写市民个人信息）", late_reply: "逾期", on_time_reply: "按时",
    screen: "大屏", screen_hint: "指挥中心大屏：1920×1080 全屏，轮播各页并实时刷新（浏览器按 F11 或以 --kiosk 打开）",
    screen_exit: "退出大屏", summoned: "被督办/吹哨", reply_rate: "按时报到率", n_steps: "{n} 个应答步骤",
  },
  en: {
    title: "CityBrain", city: "City", hotline: "Hotline 12345", orders: "Work orders", data: "Data", security: "Security",
    login: "Log in", logout: "Log out", principal: "Account", password: "Password", code: "One-time code",
    login_hint: "Log in with your own account: your password and the 6-digit code of your authenticator app (TOTP). The data office opens accounts (citybrain accounts add); each person sees their department's remit, the data office all.",
    layer: "Sensor layer", district: "District", street: "Street", area: "Area", community: "Community", grid: "Grid",
    events: "City events and work orders", evidence: "Evidence", overdue: "Overdue work orders",
    contracts: "Contracts and topics", releases: "Scenario dataset releases", quarantine: "Quarantine",
    findings: "Security findings", grants: "Grants (who reads what)", audit_trail: "Audit trail (hash-chained)", audit_ok: "audit records in the lake, every chain holds", audit_broken: "Audit chain broken: ", footer: "CityBrain operations view",
    open_events: "open events", warnings: "warnings", orders: "work orders",
    stages: "Tickets by stage of the closed loop", rates: "The three rates by day", by_department: "Resolution rate by department",
    hotspots: "Hotspot streets (tickets)", response: "handled on time", resolution: "resolution", satisfaction: "satisfaction",
    tickets: "tickets", throughput: "Records into the lake per hour", quality: "Quality checks (partitions)",
    by_kind: "Findings by kind", by_day: "Findings per day by severity", passed: "passed", failed: "failed", none: "no data yet",
    ok: "ok", silent: "silent", fault: "fault", received: "received", dispatched: "dispatched", accepted: "accepted",
    handled: "handled", closed: "closed", followed_up: "followed up", reopened: "reopened", as_of: "data as of",
    refused_logins: "Refused logins to this view", actual_reads: "Actual reads (consumer groups and the topics they committed)", by_district: "The three rates by district", department: "department", level_or_title: "level / matter", where: "where",
    overdue_min: "overdue (min)", groups: "Consumer groups and lag", loading: "loading…", in_lake: "in the lake", on_broker: "on the broker", dead_letters: "dead-letter reasons", lag: "lag",
    failed_checks: "Failed checks", data_docs: "Quality data docs (Great Expectations)",
    water_level: "water level", noise: "noise", air_quality: "air quality", traffic_flow: "traffic flow", weather: "rain (weather stations)",
    n_tickets: "{n} tickets", n_followed_up: "{n} followed up",
    work_orders: "Work orders", all: "all", status: "status", only_overdue: "overdue only", search: "Search", search_hint: "order or ticket id, or text",
    ticket: "Ticket", timeline: "Lifecycle", linked_events: "Linked city events", deadline: "deadline", received_at: "received",
    work_order: "order to a department", escalated: "escalated", about_to_breach: "about to breach", breached: "breached", open: "open", updated: "updated",
    satisfied: "satisfied", basically_satisfied: "basically satisfied", dissatisfied: "dissatisfied", resolved_yes: "resolved", resolved_no: "not resolved",
    shown_of: "{n} shown of {total}", no_lifecycle: "This login may not read the hotline's ticket lifecycle (raw.hotline.ticket_event): your department's orders only.",
    pick_ticket: "Click an order to follow it", by_escalation: "by escalation", lead: "lead", support: "support", matter: "matter",
    zone: "Time zone", beijing_time: "China Standard Time", utc_hint: "UTC on the wire; hover a time for its UTC value",
    rankings: "Assessment rankings (考核)", rank: "rank", score: "score", weights: "weights",
    tickets_today: "tickets today", whole_city: "Whole city", drill_hint: "click an area to drill down", outside_remit: "your department holds no work order here",
    urge: "Urge (督办)", whistle: "Whistle (吹哨)", actions: "Urges and whistles", summon: "Departments summoned", act_reason: "Why (no caller's personal data)",
    complexity: "Complexity", simple: "simple (report in 3 working days)", complex: "complex (5 working days)", send: "Send", cancel: "Cancel",
    sign_deadline: "sign by", contact_deadline: "contact by", report_deadline: "report by", issued_by: "raised by", departments: "departments",
    reason: "why",
    replies: "Departments' replies (报到)", reply: "Reply", reply_sign: "Sign (签收)", reply_contact: "Contacted (联系)",
    reply_report: "Report (反馈)", reply_note: "Note (required for a report; no caller's personal data)",
    late_reply: "late", on_time_reply: "on time",
    screen: "Big screen", screen_hint: "The command centre's wall: 1920×1080 full screen, cycling the pages and live (F11, or the browser in --kiosk mode)",
    screen_exit: "Leave the big screen", summoned: "summoned (urged/whistled)", reply_rate: "answered on time",
    n_steps: "{n} steps due",
  },
};
const PAGES = ["city", "hotline", "orders", "data", "security"];
const ADMIN_PAGES = ["data", "security"];
const cb = { lang: localStorage.getItem("cb-lang") || "zh", charts: {}, me: null, page: null, loaded: {} };
window.cb = cb;
const t = (k) => T[cb.lang][k] || k;
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

// Names, not codes: the city's areas (districts, streets, communities, grids) and departments by code, from its
// reference data (/api/areas: names), in the page's language; the code is the cell's tooltip.
const refName = (entry) => (entry ? (cb.lang === "zh" ? entry.name : (entry.name_en || entry.name)) : null);
const names = () => (areaData && areaData.names) || { areas: {}, departments: {} };
const deptName = (id) => (id ? refName(names().departments[id]) || id : "");
const areaName = (code, fallback) => (code ? refName(names().areas[code]) || fallback || code : fallback || "");
const reference = async () => { areaData = areaData || await api("/api/areas"); return areaData; };

// Times: UTC on the wire and in each time's tooltip; on screen the city's own clock, the zone of its raw.ref.city
// record (/api/me), named in the header.
const zone = () => (cb.me && cb.me.city && cb.me.city.timezone) || "UTC";
const zoneName = () => (zone() === "Asia/Shanghai" ? t("beijing_time") : zone());
const MINUTES = { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
let clock = null;
function local(at) {
  if (!at) return "";
  const d = new Date(at);
  if (isNaN(d)) return String(at);
  if (!clock || clock.zone !== zone()) {
    let f;   // a zone this browser does not know: UTC, as on the wire
    try { f = new Intl.DateTimeFormat("en-CA", { ...MINUTES, timeZone: zone() }); } catch (e) { f = new Intl.DateTimeFormat("en-CA", { ...MINUTES, timeZone: "UTC" }); }
    clock = { zone: zone(), f };
  }
  const p = Object.fromEntries(clock.f.formatToParts(d).map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}`;
}

async function api(path, options) {
  const r = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
  const body = await r.json().catch(() => ({}));
  if (r.status === 401) { showLogin(); throw new Error("login required"); }
  if (!r.ok) throw new Error(body.detail || body.error || r.statusText);
  return body;
}

function chart(id) {
  if (!cb.charts[id]) cb.charts[id] = echarts.init($(id), "dark", { renderer: "canvas" });
  return cb.charts[id];
}

// A column: [field or function of the row, heading(, function of the row giving the cell's tooltip)].
function table(id, rows, cols, onClick) {
  const el = $(id);
  if (!rows.length) { el.innerHTML = `<tr><td>${esc(t("none"))}</td></tr>`; return; }
  el.innerHTML = "<tr>" + cols.map((c) => `<th>${esc(c[1])}</th>`).join("") + "</tr>" +
    rows.map((r, i) => `<tr data-i="${i}" class="${onClick ? "clickable" : ""}">` +
      cols.map((c) => `<td${c[2] ? ` title="${esc(c[2](r))}"` : ""}>${esc(typeof c[0] === "function" ? c[0](r) : r[c[0]])}</td>`).join("") + "</tr>").join("");
  if (onClick) el.querySelectorAll("tr[data-i]").forEach((tr) => tr.addEventListener("click", () => onClick(rows[+tr.dataset.i])));
}

function translate() {
  document.documentElement.lang = cb.lang === "zh" ? "zh-CN" : "en";
  $("title").textContent = t("title");
  $("lang").textContent = cb.lang === "zh" ? "English" : "中文";
  $("logout").textContent = t("logout");
  $("screen").textContent = t("screen"); $("screen").title = t("screen_hint"); $("screen").hidden = !cb.me || screen.on;
  $("screen-exit").textContent = t("screen_exit"); $("screen-exit").hidden = !screen.on;
  $("zone").textContent = cb.me ? `${t("zone")}${cb.lang === "zh" ? "：" : ": "}${zoneName()}` : "";
  $("zone").title = `${zone()} · ${t("utc_hint")}`;
  document.querySelectorAll("[data-t]").forEach((el) => { el.textContent = t(el.dataset.t); });
  $("orders-q").placeholder = t("search_hint");
  document.querySelectorAll("#hotline-ranking-scope option").forEach((o) => { o.textContent = t(o.value); });
  renderTabs();
}

function renderTabs() {
  const pages = cb.me ? PAGES.filter((p) => cb.me.admin || !ADMIN_PAGES.includes(p)) : [];
  $("tabs").innerHTML = pages.map((p) => `<button type="button" data-page="${p}" class="${p === cb.page ? "active" : ""}">${esc(t(p))}</button>`).join("");
  $("tabs").querySelectorAll("button").forEach((b) => b.addEventListener("click", () => show(b.dataset.page)));
}

function showLogin() {
  cb.me = null;
  document.querySelectorAll(".page").forEach((p) => { p.hidden = true; });
  $("login").hidden = false; $("logout").hidden = true; $("who").textContent = ""; $("zone").textContent = "";
  $("screen").hidden = true;
  renderTabs();
}

async function show(page) {
  cb.page = page;
  document.body.dataset.rendered = "";
  if (location.hash.slice(1).split("/")[0] !== page) location.hash = page;
  document.querySelectorAll(".page").forEach((p) => { p.hidden = p.id !== `page-${page}`; });
  renderTabs();
  const started = performance.now();
  try {
    await RENDER[page]();
    cb.loaded[page] = Math.round(performance.now() - started);
  } catch (e) {
    cb.loaded[page] = -1;
    console.error(e);
  }
  Object.values(cb.charts).forEach((c) => c.resize());
  document.body.dataset.rendered = page;
}

// -- City: drill-down district → street → community → grid ---------------------------------
// The map draws the children of the area drilled into (the whole city: its districts), coloured by their figures;
// a click on one drills into it (/api/area?code=: its figures, its way up, its children, its events and devices,
// cut to the viewer's remit), the breadcrumbs lead back up. The address keeps the area (#city/<code>).
let cityData = null, areaData = null, featureOf = null;
cb.area = "";

async function renderCity() {
  let here;
  try {
    [, here] = await Promise.all([reference(), api(`/api/area?code=${encodeURIComponent(cb.area)}`)]);
  } catch (e) {   // a link to an area gone, or outside the viewer's remit: the whole city, saying why
    if (!cb.area) throw e;
    cb.area = ""; location.hash = "city";
    here = await api("/api/area?code=");
    $("city-detail").textContent = String(e.message || e);
  }
  cityData = cb.areaPage = here;
  if (!featureOf) {
    featureOf = {};
    for (const fc of Object.values(areaData.levels)) for (const f of fc.features) featureOf[f.properties.name] = f;
  }
  const sel = $("city-sensor");
  const sensors = [...new Set(cityData.devices.map((d) => d.type))].filter((s) => ![...sel.options].some((o) => o.value === s));
  sensors.forEach((s) => sel.add(new Option(t(s), s)));
  if (sensors.length && !sel.value) sel.value = [...sel.options].some((o) => o.value === "water_level") ? "water_level" : sel.options[1].value;
  crumbs();
  cards(cityData.area.kpis);
  drawMap();
  table("city-events", cityData.events, [[(r) => areaName(r.area_code, r.area_name), t("area"), (r) => r.area_code ?? ""], ["title", t("events")], [(r) => r.severity ?? r.priority, "!"],
    [(r) => local(r.detected_at || r.received_at), zoneName(), (r) => r.detected_at || r.received_at]],
    (r) => {
      $("city-detail").textContent = JSON.stringify(r.evidence || r, null, 1) + (r.explanation ? "\n" + r.explanation : "");
      cb.cityEvent = r.event_id ? r : null;
      $("city-whistle").hidden = !(r.event_id && may("whistle"));
    });
  // a live redraw keeps the button while the event picked is still listed
  $("city-whistle").hidden = !(cb.cityEvent && may("whistle") && cityData.events.some((e) => e.event_id === cb.cityEvent.event_id));
  document.body.dataset.area = cb.area;
}

// An area's name in the page's language: the whole city by the city's own name.
const placeName = (a) => (a.code ? refName(a) || a.code : refName(a) || t("whole_city"));

function crumbs() {
  const path = cityData.path;
  $("city-crumbs").innerHTML = path.map((a, i) => (i === path.length - 1
    ? `<b title="${esc(a.code)}">${esc(placeName(a))}</b>`
    : `<button type="button" data-code="${esc(a.code)}" title="${esc(a.code)}">${esc(placeName(a))}</button>`)).join(" › ") +
    ` <span class="hint">${esc(cityData.area.code ? t(cityData.area.level) : "")}${cityData.children.length ? ` · ${t("drill_hint")}` : ""}</span>`;
  $("city-crumbs").querySelectorAll("button[data-code]").forEach((b) => b.addEventListener("click", () => drill(b.dataset.code)));
}

// The area's cards: open events, warnings, tickets today, overdue, and the three rates with what each rests on.
function cards(k) {
  const items = [[t("open_events"), k.open_events], [t("warnings"), k.warnings], [t("tickets_today"), k.tickets_today],
    [t("overdue"), k.overdue], ...RATE_FIELDS.map(([f, n]) => [t(n), pct(k.rates[f]), restsOn(f, k.rates[`${f}_n`])])];
  $("city-kpis").innerHTML = items.map(([label, value, note]) =>
    `<div class="card"><b>${esc(value)}</b><span>${esc(label)}</span>${note ? `<small>${esc(note)}</small>` : ""}</div>`).join("");
}

function drill(code) {
  cb.area = code;
  location.hash = code ? `city/${encodeURIComponent(code)}` : "city";
  $("city-detail").textContent = "";
  return show("city");
}

function drawMap() {
  const children = cityData.children;
  // The children of the area; an area with none (a grid) is drawn itself.
  const shown = (children.length ? children : [cityData.area]).filter((a) => featureOf[a.code]);
  const mapName = `cb-area-${cityData.area.code || "city"}`;
  if (!echarts.getMap(mapName)) echarts.registerMap(mapName, { type: "FeatureCollection", features: shown.map((a) => featureOf[a.code]) });
  const score = (k) => k.open_events * 3 + k.warnings * 2 + k.overdue + k.tickets_today;
  const data = shown.map((a) => ({ name: a.code, value: score(a.kpis), area: a }));
  // An area outside a department's orders is greyed: it cannot be drilled into (the server refuses it).
  const regions = shown.filter((a) => a.in_remit === false).map((a) => ({ name: a.code, itemStyle: { areaColor: "#2a2f36" } }));
  const kind = $("city-sensor").value;
  const devices = cityData.devices.filter((d) => d.type === kind && d.lat != null);
  const colour = { ok: "#4caf50", silent: "#ffb300", fault: "#e53935" };
  chart("chart-map").setOption({
    tooltip: { formatter: (p) => p.seriesType === "scatter" ? `${esc(p.data.id)}<br>${esc(p.data.v ?? "–")} ${esc(p.data.unit)}<br>${esc(t(p.data.health))}`
      : !p.data ? esc(p.name) : `${esc(placeName(p.data.area))} <small>${esc(p.name)}</small><br>${esc(t("open_events"))} ${p.data.area.kpis.open_events} · ` +
        `${esc(t("warnings"))} ${p.data.area.kpis.warnings} · ${esc(t("overdue"))} ${p.data.area.kpis.overdue}` +
        (p.data.area.in_remit === false ? `<br>${esc(t("outside_remit"))}` : "") },
    visualMap: { min: 0, max: Math.max(1, ...data.map((d) => d.value)), left: 10, bottom: 10, calculable: true,
      inRange: { color: ["#16324f", "#f9a825", "#d32f2f"] }, seriesIndex: 0, textStyle: { color: "#dfe8f3" } },
    geo: { map: mapName, roam: true, label: { show: shown.length <= 40, formatter: (p) => placeName((data.find((d) => d.name === p.name) || { area: { code: p.name } }).area), color: "#fff" },
      itemStyle: { borderColor: "#3d6a99" }, regions },
    series: [
      { type: "map", geoIndex: 0, data },
      { type: "scatter", coordinateSystem: "geo", symbolSize: 6,
        data: devices.map((d) => ({ value: [d.long, d.lat], id: d.device_id, v: d.value, unit: d.unit, health: d.health,
          itemStyle: { color: colour[d.health] } })) },
    ],
  }, true);
  chart("chart-map").off("click");
  chart("chart-map").on("click", (p) => {
    if (p.seriesType === "scatter") { $("city-detail").textContent = JSON.stringify(p.data, null, 1); return; }
    const child = children.find((a) => a.code === p.name);
    if (!child) return;   // the area itself, with nothing below it
    if (child.in_remit === false) { $("city-detail").textContent = `${placeName(child)}: ${t("outside_remit")}`; return; }
    drill(child.code);
  });
}

// -- Hotline ---------------------------------------------------------------------------------
const RATE_FIELDS = [["handled_on_time_rate", "response"], ["resolution_rate", "resolution"], ["satisfaction_rate", "satisfaction"]];
const pct = (x) => (x == null ? "–" : `${(x * 100).toFixed(1)}%`);
// What a rate rests on: the tickets, or for satisfaction the callers followed up.
const restsOn = (f, n) => t(f === "satisfaction_rate" ? "n_followed_up" : "n_tickets").replace("{n}", n ?? 0);
const rateItem = (g, f) => ({ value: g[f], n: g[`${f}_n`], f });
function rateTip(params) {
  const list = Array.isArray(params) ? params : [params];
  return esc(list[0].name) + list.map((p) => `<br>${p.marker}${esc(p.seriesName)} ${pct(p.value)} (${esc(restsOn(p.data.f, p.data.n))})`).join("");
}

async function renderHotline() {
  const [h] = await Promise.all([api("/api/hotline"), reference()]);
  const stages = Object.keys(h.stages || {});
  chart("chart-stages").setOption({ title: { text: t("stages"), textStyle: { fontSize: 13 } }, tooltip: {},
    xAxis: { type: "category", data: stages.map(t) }, yAxis: { type: "value" },
    series: [{ type: "bar", data: stages.map((s) => h.stages[s]) }] }, true);
  // The three rates as the server pooled them over their tickets (citybrain/ui/kpis.py), never a mean of shares.
  const rates = h.rates || { all: {}, day: [], department: [], district: [] };
  const days = rates.day.map((g) => g.day);
  chart("chart-rates").setOption({ title: { text: t("rates"), textStyle: { fontSize: 13 } }, tooltip: { trigger: "axis", formatter: rateTip }, legend: { top: 20 },
    xAxis: { type: "category", data: days }, yAxis: { type: "value", min: 0, max: 1 },
    series: RATE_FIELDS.map(([f, n]) => ({ type: "line", name: t(n), data: rates.day.map((g) => rateItem(g, f)) })) }, true);
  chart("chart-departments").setOption({ title: { text: t("by_department"), textStyle: { fontSize: 13 } }, tooltip: { formatter: rateTip }, grid: { containLabel: true },
    xAxis: { type: "category", data: rates.department.map((g) => deptName(g.department)), axisLabel: { rotate: 30 } }, yAxis: { type: "value", min: 0, max: 1 },
    series: [{ type: "bar", name: t("resolution"), data: rates.department.map((g) => rateItem(g, "resolution_rate")) }] }, true);
  const spots = {};
  for (const r of (h.hotspots || []).filter((r) => !r.error)) {
    const k = areaName(r.area_code || r.street_code, r.area_name || r.street_name); spots[k] = (spots[k] || 0) + (r.tickets || r.calls || 0);
  }
  const top = Object.entries(spots).sort((a, b) => b[1] - a[1]).slice(0, 12);
  chart("chart-hotspots").setOption({ title: { text: t("hotspots"), textStyle: { fontSize: 13 } }, tooltip: {},
    xAxis: { type: "value" }, yAxis: { type: "category", data: top.map((x) => x[0]).reverse() },
    series: [{ type: "bar", data: top.map((x) => x[1]).reverse() }] }, true);
  $("hotline-summary").textContent = `${t("tickets")} ${rates.all.tickets || 0}` +
    RATE_FIELDS.map(([f, n]) => ` · ${t(n)} ${pct(rates.all[f])} (${restsOn(f, rates.all[`${f}_n`])})`).join("") +
    (cb.me.admin ? "" : ` · ${t("orders")} ${h.orders}`) + (h.as_of ? ` · ${t("as_of")} ${local(h.as_of)} ${zoneName()}` : "");
  $("hotline-summary").title = h.as_of || "";
  chart("chart-districts").setOption({ title: { text: t("by_district"), textStyle: { fontSize: 13 } }, tooltip: { trigger: "axis", formatter: rateTip }, legend: { top: 20 },
    xAxis: { type: "category", data: rates.district.map((g) => areaName(g.district_code)), axisLabel: { interval: 0 } }, yAxis: { type: "value", min: 0, max: 1 },
    series: RATE_FIELDS.map(([f, n]) => ({ type: "bar", name: t(n), data: rates.district.map((g) => rateItem(g, f)) })) }, true);
  const rateCols = RATE_FIELDS.map(([f, n]) => [(g) => `${pct(g[f])} (${restsOn(f, g[`${f}_n`])})`, t(n)]);
  table("hotline-rates", rates.district, [[(g) => areaName(g.district_code), t("district"), (g) => g.district_code],
    ["tickets", t("tickets")], ...rateCols]);
  cb.hotline = h;
  drawRankings();
  $("hotline-overdue-count").textContent = h.overdue_total ? `(${h.overdue_total})` : "";
  table("hotline-overdue", h.overdue || [], [["work_order_id", "ID"], [(r) => deptName(r.department), t("department"), (r) => r.department || ""],
    [(r) => (r.level ? t(r.level) : r.title), t("level_or_title")], [(r) => areaName(r.area_code, r.street_name), t("where"), (r) => r.area_code || ""],
    [(r) => local(r.sla_deadline), `SLA (${zoneName()})`, (r) => r.sla_deadline], ["overdue_min", t("overdue_min")]],
    (r) => { location.hash = `orders/${encodeURIComponent(r.work_order_id)}`; show("orders"); });
}

// 考核: the released hotline_rankings, by district, street or department (a department: its own place among the
// departments), each rate with what it rests on and the weights the city pack declares.
function drawRankings() {
  const ranked = ((cb.hotline && cb.hotline.rankings) || []).filter((r) => !r.error);
  const sel = $("hotline-ranking-scope");
  const scopes = [...new Set(ranked.map((r) => r.scope))];
  if (scopes.length && !scopes.includes(sel.value)) sel.value = scopes[0];
  const unit = (r) => (r.scope === "department" ? deptName(r.unit) : areaName(r.unit));
  const w = ranked[0];
  $("hotline-weights").textContent = w ? `${t("weights")}${cb.lang === "zh" ? "：" : ": "}` +
    RATE_FIELDS.map(([, n]) => `${t(n)} ${w[`weight_${n}`]}`).join(" · ") : "";
  // A department's row also counts the urges and whistles that summoned it and its answers on time (部门报到).
  const acted = (r) => ((cb.hotline && cb.hotline.actions) || {})[r.unit] || { summoned: 0, urged: 0, due: 0, on_time_rate: null };
  const actionCols = sel.value === "department" ? [[(r) => `${acted(r).summoned} (${t("urge")} ${acted(r).urged})`, t("summoned")],
    [(r) => `${pct(acted(r).on_time_rate)} (${t("n_steps").replace("{n}", acted(r).due)})`, t("reply_rate")]] : [];
  table("hotline-rankings", ranked.filter((r) => r.scope === sel.value), [["rank", t("rank")], [unit, t(sel.value), (r) => r.unit],
    ["score", t("score")], ["tickets", t("tickets")],
    ...RATE_FIELDS.map(([f, n]) => [(r) => `${pct(r[f])} (${restsOn(f, f === "satisfaction_rate" ? r.followed_up : r.tickets)})`, t(n)]),
    ...actionCols]);
}

// -- Work orders -----------------------------------------------------------------------------
// The viewer's orders (a department: its own), filtered on the server (/api/orders); a click opens the ticket's
// lifecycle (/api/ticket), which the address keeps (#orders/<id>) so a ticket can be linked to.
function fillSelect(id, values, label) {
  const sel = $(id), keep = sel.value;
  sel.innerHTML = "";
  sel.add(new Option(t("all"), ""));
  values.forEach(([value, text, title]) => { const o = new Option(text, value); if (title) o.title = title; sel.add(o); });
  sel.value = [...sel.options].some((o) => o.value === keep) ? keep : "";
  sel.title = label;
}

function areaOptions() {
  // Districts, then each one's streets and communities below it, by the areas' parent links.
  const areas = names().areas, below = {};
  for (const [code, a] of Object.entries(areas)) if (a.level !== "grid") (below[a.parent || ""] = below[a.parent || ""] || []).push(code);
  const out = [], seen = new Set();
  const walk = (code, depth) => {
    if (seen.has(code)) return;
    seen.add(code);
    out.push([code, `${"\u3000".repeat(depth)}${areaName(code)}`, code]);
    (below[code] || []).sort().forEach((c) => walk(c, depth + 1));
  };
  Object.keys(areas).filter((c) => areas[c].level === "district").sort().forEach((c) => walk(c, 0));
  return out;
}

async function renderOrders() {
  await reference();
  const q = new URLSearchParams();
  for (const [k, id] of [["area", "orders-area"], ["department", "orders-department"], ["status", "orders-status"], ["q", "orders-q"]]) {
    if ($(id).value) q.set(k, $(id).value.trim());
  }
  if ($("orders-overdue").checked) q.set("overdue", "1");
  const o = await api(`/api/orders?${q}`);
  fillSelect("orders-area", areaOptions(), t("area"));
  fillSelect("orders-department", o.departments.map((d) => [d, deptName(d), d]), t("department"));
  $("orders-department").hidden = !cb.me.admin;
  fillSelect("orders-status", o.statuses.map((s) => [s, t(s), s]), t("status"));
  $("orders-summary").textContent = t("shown_of").replace("{n}", o.orders.length).replace("{total}", o.total) +
    (o.as_of ? ` · ${t("as_of")} ${local(o.as_of)} ${zoneName()}` : "") + (o.lifecycle ? "" : ` · ${t("no_lifecycle")}`);
  table("orders-list", o.orders, [["work_order_id", "ID"], ["title", t("matter")], [(r) => deptName(r.department), t("department"), (r) => r.department],
    [(r) => areaName(r.area_code, r.street_name), t("area"), (r) => r.area_code || ""], [(r) => (r.status ? t(r.status) : "–"), t("status")],
    [(r) => local(r.received_at), `${t("received_at")} (${zoneName()})`, (r) => r.received_at],
    [(r) => `${local(r.sla_deadline)}${r.overdue ? " ⚠" : ""}`, `${t("deadline")} (${zoneName()})`, (r) => r.sla_deadline]],
    (r) => { location.hash = `orders/${encodeURIComponent(r.work_order_id)}`; openTicket(r.work_order_id); });
  $("orders-list").querySelectorAll("tr[data-i]").forEach((tr) => tr.classList.toggle("late", o.orders[+tr.dataset.i].overdue));
  const [, wanted] = location.hash.slice(1).split("/");
  if (wanted) await openTicket(decodeURIComponent(wanted));
  else $("ticket").textContent = t("pick_ticket");
  await renderActions();
}

function stepLine(s) {
  const parts = [];
  if (s.level && s.level !== "department") parts.push(`${t(s.level)} ${areaName(s.area_code)}`);
  if (s.department) parts.push(deptName(s.department));
  if (s.role) parts.push(t(s.role));
  if (s.escalated) parts.push(t("by_escalation"));
  if (s.deadline) parts.push(`${t("deadline")} ${local(s.deadline)}`);
  if (s.overdue_min != null) parts.push(`${t("overdue_min")} ${s.overdue_min}`);
  if (s.on_time != null) parts.push(t(s.on_time ? "on_time_reply" : "late_reply"));
  if (s.satisfaction) parts.push(t(s.satisfaction));
  if (s.resolved != null) parts.push(t(s.resolved ? "resolved_yes" : "resolved_no"));
  if (s.note) parts.push(s.note);
  if (s.reason) parts.push(s.reason);
  return parts.join(" · ");
}

async function openTicket(id) {
  const box = $("ticket");
  box.textContent = t("loading");
  let k;
  try { k = await api(`/api/ticket?id=${encodeURIComponent(id)}`); } catch (e) { box.textContent = String(e.message || e); return; }
  cb.ticket = k;
  const head = `<h3>${esc(t("ticket"))} ${esc(k.id)}</h3>` +
    `<p class="summary">${esc(k.title)} · <span title="${esc(k.area_code || "")}">${esc(areaName(k.area_code))}</span>` +
    (k.community_code && k.community_code !== k.area_code ? ` · <span title="${esc(k.community_code)}">${esc(areaName(k.community_code))}</span>` : "") +
    ` · ${esc(k.status ? t(k.status) : "–")}${k.overdue ? ` · <span class="late">${esc(t("breached"))}</span>` : ""}</p>`;
  const steps = k.timeline.map((s) => `<li class="step-${esc(s.step)}"><time title="${esc(s.at)}">${esc(local(s.at))}</time> ` +
    `<b>${esc(t(s.step))}</b> ${esc(stepLine(s))}</li>`).join("");
  const events = k.events.map((e) => `<li><time title="${esc(e.detected_at)}">${esc(local(e.detected_at))}</time> <b>${esc(e.title)}</b> ` +
    `<span title="${esc(e.area_code || "")}">${esc(areaName(e.area_code, e.area_name))}</span> · ${esc(t(e.status))} · ${esc(e.event_id)}</li>`).join("");
  const source = k.source === "city_event" ? "city_event" : "ticket";
  const buttons = (may("whistle") ? `<button type="button" class="act" data-kind="whistle" data-type="${source}" data-id="${esc(k.id)}">${esc(t("whistle"))}</button> ` : "") +
    (may("urge") ? k.timeline.filter((s) => s.work_order_id).map((s) => `<button type="button" class="act" data-kind="urge" data-type="work_order" ` +
      `data-id="${esc(s.work_order_id)}" title="${esc(s.work_order_id)}">${esc(t("urge"))} ${esc(deptName(s.department))}</button>`).join(" ") : "");
  box.innerHTML = head + (buttons ? `<p class="acts">${buttons}</p>` : "") + `<h4>${esc(t("timeline"))} (${esc(zoneName())})</h4><ol class="timeline">${steps}</ol>` +
    (k.lifecycle ? "" : `<p class="hint">${esc(t("no_lifecycle"))}</p>`) +
    (events ? `<h4>${esc(t("linked_events"))}</h4><ul class="timeline">${events}</ul>` : "");
  box.querySelectorAll("button.act").forEach((b) => b.addEventListener("click", () => openAct(b.dataset.kind, b.dataset.type, b.dataset.id, k.title)));
  document.body.dataset.ticket = k.id;
}

// -- Acting: 督办 (urge) on a work order, 吹哨 (whistle) on a ticket or city event ----------------
// The server decides who may (citybrain/ui/act.py); the buttons only show where it would agree: the data office
// urges and whistles, a street office (the hotline's login) whistles, a department does neither.
const may = (kind) => !!cb.me && (cb.me.admin || (kind === "whistle" && cb.me.department === "hotline_12345"));

function openAct(kind, type, id, title) {
  cb.act = { kind, target_type: type, target_id: id };
  $("act-title").textContent = t(kind);
  $("act-target").textContent = `${title || ""} · ${id}`;
  $("act-error").textContent = "";
  const depts = Object.keys(names().departments).filter((d) => d !== "hotline_12345").sort();
  $("act-departments").innerHTML = depts.map((d) => `<label title="${esc(d)}"><input type="checkbox" name="departments" value="${esc(d)}"> ${esc(deptName(d))}</label>`).join("");
  $("act-dialog").showModal();
}

async function sendAct() {
  const departments = [...$("act-departments").querySelectorAll("input:checked")].map((i) => i.value);
  const body = { target_type: cb.act.target_type, target_id: cb.act.target_id, departments,
    reason: $("act-reason").value, complexity: $("act-complexity").value };
  const r = await fetch(`/api/${cb.act.kind}`, { method: "POST", headers: { "Content-Type": "application/json" }, credentials: "same-origin",
    body: JSON.stringify(body) });
  const b = await r.json().catch(() => ({}));
  if (!r.ok) { $("act-error").textContent = b.detail || b.error || r.statusText; return; }
  cb.lastAction = b;
  $("act-dialog").close();
  $("act-form").reset();
  document.body.dataset.action = b.action_id;
  if (cb.page === "orders") await renderActions();
}

// The urges and whistles the viewer follows (a department: those summoning it), each step's deadline with ⚠ where a
// department is late on it, each department's replies (✓ on time, ⚠ late, ✗ owed and past its deadline, – owed), and
// for a department summoned the button of the step it owes next (部门报到: 签收, 联系, 反馈, in order).
const REPLY_STEPS = ["sign", "contact", "report"];
const replyMarks = (r, d) => REPLY_STEPS.map((s) => {
  const x = ((r.replies || {})[d] || {})[s];
  return `${t(`reply_${s}`)}${x ? (x.on_time ? "✓" : "⚠") : (((r.late || {})[s] || []).includes(d) ? "✗" : "–")}`;
}).join(" ");

async function renderActions() {
  const a = await api("/api/actions");
  cb.actions = a;
  table("actions-list", a.actions, [[(r) => t(r.kind), ""], ["title", t("matter")], [(r) => r.departments.map(deptName).join("、"), t("departments"), (r) => r.departments.join(", ")],
    ["reason", t("reason")], ["issued_by", t("issued_by")],
    ...REPLY_STEPS.map((s) => [(r) => `${local(r[`${s}_deadline`])}${(r.late || {})[s] ? " ⚠" : ""}`, `${t(`${s}_deadline`)} (${zoneName()})`,
      (r) => `${r[`${s}_deadline`]}${(r.late || {})[s] ? ` · ${t("late_reply")}: ${r.late[s].map(deptName).join("、")}` : ""}`]),
    [(r) => r.departments.map((d) => `${deptName(d)} ${replyMarks(r, d)}`).join("；"), t("replies")]],
    (r) => { if (r.ticket_id || r.target_type !== "city_event") { location.hash = `orders/${encodeURIComponent(r.ticket_id || r.target_id)}`; openTicket(r.ticket_id || r.target_id); } });
  $("actions-list").querySelectorAll("tr[data-i]").forEach((tr) => {
    const r = a.actions[+tr.dataset.i];
    tr.classList.toggle("late", !!r.overdue);
    if (!r.next) return;
    const td = document.createElement("td");
    const b = document.createElement("button");
    b.type = "button"; b.className = "reply"; b.dataset.step = r.next; b.dataset.action = r.action_id;
    b.textContent = `${t("reply")}：${t(`reply_${r.next}`)}`;
    b.addEventListener("click", (ev) => { ev.stopPropagation(); openReply(r); });
    td.appendChild(b);
    tr.appendChild(td);
  });
}

function openReply(r) {
  cb.reply = { action_id: r.action_id, step: r.next };
  $("reply-title").textContent = `${t("reply")}：${t(`reply_${r.next}`)}`;
  $("reply-target").textContent = `${t(r.kind)} · ${r.title || ""} · ${r.action_id}`;
  $("reply-error").textContent = "";
  $("reply-note").required = r.next === "report";
  $("reply-dialog").showModal();
}

async function sendReply() {
  const body = { action_id: cb.reply.action_id, step: cb.reply.step, note: $("reply-note").value || null };
  const r = await fetch("/api/reply", { method: "POST", headers: { "Content-Type": "application/json" }, credentials: "same-origin",
    body: JSON.stringify(body) });
  const b = await r.json().catch(() => ({}));
  if (!r.ok) { $("reply-error").textContent = b.detail || b.error || r.statusText; return; }
  $("reply-dialog").close();
  $("reply-form").reset();
  document.body.dataset.reply = b.reply_id;
  if (cb.page === "orders") await renderActions();
}

// -- Data ------------------------------------------------------------------------------------
async function renderData() {
  const d = await api("/api/data");
  const hours = [...new Set(d.contracts.flatMap((c) => Object.keys(c.per_hour)))].sort();
  const busy = d.contracts.filter((c) => c.records > 0).sort((a, b) => b.records - a.records).slice(0, 8);
  chart("chart-throughput").setOption({ title: { text: t("throughput"), textStyle: { fontSize: 13 } }, tooltip: { trigger: "axis" },
    legend: { type: "scroll", top: 20 }, xAxis: { type: "category", data: hours }, yAxis: { type: "value" },
    series: busy.map((c) => ({ type: "line", name: c.topic, stack: "all", areaStyle: {}, data: hours.map((h) => c.per_hour[h] || 0) })) }, true);
  const byLayer = d.quality;
  const layers = Object.keys(byLayer);
  chart("chart-quality").setOption({ title: { text: t("quality"), textStyle: { fontSize: 13 } }, tooltip: {}, legend: { top: 20 },
    xAxis: { type: "category", data: layers }, yAxis: { type: "value" },
    series: ["passed", "failed"].map((s) => ({ type: "bar", name: t(s), stack: "q", data: layers.map((l) => byLayer[l][s]) })) }, true);
  table("data-contracts", d.contracts, [["topic", "topic"], ["owner", "owner"], ["version", "version"], ["zone", "zone"], ["records", "records"]]);
  $("data-docs").innerHTML = d.data_docs ? `<a href="${esc(d.data_docs)}" target="_blank">${esc(t("data_docs"))}</a>` : esc(t("none"));
  table("data-failed", d.failed_checks, [["layer", "layer"], ["contract", "contract"], ["partition", "partition"], ["check", "check"],
    ["column", "column"], ["observed", "observed"]]);
  table("data-releases", d.releases, [["dataset", "dataset"], ["latest", "version"], ["rows", "rows"], ["quality", "quality"], [(r) => local(r.released_at), `released (${zoneName()})`, (r) => r.released_at]]);
  table("data-quarantine", d.quarantine.map((p) => ({ p })), [["p", "path"]]);
  fillBroker(d);   // not awaited: the first screen does not wait for the broker
}

// The broker's figures after the first screen: they take a round of admin requests.
async function fillBroker(d) {
  $("data-broker").textContent = t("loading");
  const b = await api("/api/broker").catch((e) => ({ error: String(e) }));
  document.body.dataset.broker = b.error ? "error" : "done";
  if (b.error) { $("data-broker").textContent = b.error; return; }
  $("data-broker").textContent = "";
  const letters = (topic) => Object.entries(b.dead_letters[topic] || b.dead_letters[topic.replace(/\.v\d+$/, "")] || {}).map(([r, n]) => `${r} ${n}`).join(", ");
  table("data-contracts", d.contracts, [["topic", "topic"], ["owner", "owner"], ["version", "version"], ["zone", "zone"],
    ["records", t("in_lake")], [(r) => b.records[r.topic] ?? "–", t("on_broker")], [(r) => letters(r.topic), t("dead_letters")]]);
  table("data-groups", b.groups, [["group", "group"], [(g) => g.topics.join(", "), "topics"], ["committed", "committed"], ["lag", t("lag")]]);
}

// -- Security --------------------------------------------------------------------------------
async function renderSecurity() {
  const s = await api("/api/security");
  const kinds = Object.keys(s.by_kind);
  chart("chart-findings").setOption({ title: { text: t("by_kind"), textStyle: { fontSize: 13 } }, tooltip: {}, grid: { containLabel: true },
    xAxis: { type: "category", data: kinds, axisLabel: { rotate: 20 } }, yAxis: { type: "value" },
    series: [{ type: "bar", data: kinds.map((k) => s.by_kind[k]) }] }, true);
  const days = Object.keys(s.by_day).sort();
  chart("chart-days").setOption({ title: { text: t("by_day"), textStyle: { fontSize: 13 } }, tooltip: { trigger: "axis" }, legend: { top: 20 },
    xAxis: { type: "category", data: days }, yAxis: { type: "value" },
    series: ["critical", "high", "medium", "low"].map((sev) => ({ type: "bar", stack: "s", name: sev, itemStyle: { color: SEVERITY[sev] },
      data: days.map((d) => s.by_day[d][sev] || 0) })) }, true);
  table("security-findings", s.findings, [["severity", "severity"], ["kind", "kind"], ["subject", "subject"], ["summary", "summary"], [(r) => local(r.last_seen), `last seen (${zoneName()})`, (r) => r.last_seen]]);
  table("security-logins", s.ui_refused_logins || [], [[(r) => local(r.at), `at (${zoneName()})`, (r) => r.at], ["principal", "principal"], ["address", "address"],
    [(r) => (r.rate_limited ? "429" : "401"), "status"]]);
  table("security-grants", s.grants, [["principal", "principal"], ["topic", "topic"], ["pattern", "pattern"], ["justification", "justification"]]);
  $("security-audit").textContent = s.audit.breaks.length ? t("audit_broken") + s.audit.breaks.join("; ") : `${s.audit.records} ${t("audit_ok")}`;
  table("security-audit-records", s.audit.recent, [[(r) => local(r.at), `at (${zoneName()})`, (r) => r.at], ["actor", "actor"], ["action", "action"],
    ["target", "target"], ["outcome", "outcome"], [(r) => `${r.trail} #${r.seq}`, "trail"]]);
  fillReads();   // not awaited: the broker's answer follows the first screen
}

// Who actually reads what: each consumer group (a department's are named dept-<department>.*) and the topics it committed.
async function fillReads() {
  $("security-broker").textContent = t("loading");
  const b = await api("/api/broker").catch((e) => ({ error: String(e) }));
  $("security-broker").textContent = b.error || "";
  if (b.error) return;
  // A department may only use groups named after its principal (infra/access.yaml); the rest are the platform's.
  table("security-reads", b.groups, [[(g) => (g.group.startsWith("dept-") ? g.group.split(".")[0] : "citybrain-admin"), "principal"], ["group", "group"],
    [(g) => g.topics.join(", "), "topics"], ["committed", "committed"]]);
}

const SEVERITY = { critical: "#d32f2f", high: "#f57c00", medium: "#fbc02d", low: "#90caf9" };
const RENDER = { city: renderCity, hotline: renderHotline, orders: renderOrders, data: renderData, security: renderSecurity };

// -- Live: one EventSource per page; the server's one Kafka consumer feeds them all -----------
let live = null, refresh = null;
function listen() {
  if (live) live.close();
  live = new EventSource("/api/live");
  live.addEventListener("hello", (ev) => { cb.live = JSON.parse(ev.data).status; });
  live.addEventListener("record", (ev) => {
    const { topic, record } = JSON.parse(ev.data);
    cb.liveCount = (cb.liveCount || 0) + 1;
    cb.lastLive = { topic, record };
    if (topic.startsWith("dispatch.command.") && cb.page === "orders") { renderActions(); return; }
    if (cb.page !== "city") return;
    clearTimeout(refresh);   // a burst of records redraws once
    refresh = setTimeout(() => renderCity().then(() => { document.body.dataset.live = String(cb.liveCount); }), 500);
  });
  live.onerror = () => { if (!cb.me) live.close(); };
}

// -- The big screen (大屏): ?screen=1[&every=<seconds>] for the command centre's wall ----------------------------
// The pages the viewer may see, one after another every `every` seconds (30 by default, 5 at least), each drawn
// afresh from the server as it comes round and redrawn by the live feed while shown; the header keeps the city's
// name, its clock and the live feed's state; acting (buttons, forms, dialogs) is left to the desks.
const SCREEN_PAGES = ["city", "hotline", "orders", "data"];
const screenParams = new URLSearchParams(location.search);
const screen = { on: screenParams.get("screen") === "1", every: Math.max(5, Number(screenParams.get("every")) || 30), timer: null, cycles: 0 };

function startScreen() {
  document.body.classList.add("screen");
  document.body.dataset.screen = "1";
  const pages = SCREEN_PAGES.filter((p) => cb.me.admin || !ADMIN_PAGES.includes(p));
  const tick = () => {
    const now = new Date();
    $("screen-clock").textContent = `${local(now.toISOString())}:${String(now.getSeconds()).padStart(2, "0")} ${zoneName()}`;
    $("screen-live").textContent = cb.live || "";
  };
  tick();
  setInterval(tick, 1000);
  clearInterval(screen.timer);
  screen.timer = setInterval(async () => {
    if (!cb.me) return;
    const next = pages[(pages.indexOf(cb.page) + 1) % pages.length];
    await show(next);
    screen.cycles += 1;
    document.body.dataset.screenCycles = String(screen.cycles);
  }, screen.every * 1000);
}

async function start() {
  translate();
  try { cb.me = await api("/api/me"); } catch (e) { return; }
  $("login").hidden = true; $("logout").hidden = false;
  $("who").textContent = cb.me.principal;
  translate();   // the header names the city's zone once it is known
  const [wanted, arg] = location.hash.slice(1).split("/");   // a page, orders/<ticket id> or city/<area code>
  if (wanted === "city" && arg) cb.area = decodeURIComponent(arg);
  const allowed = PAGES.filter((p) => cb.me.admin || !ADMIN_PAGES.includes(p));
  await show(allowed.includes(wanted) ? wanted : "city");
  listen();
  if (screen.on) startScreen();
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  $("login-error").textContent = "";
  const r = await fetch("/api/login", { method: "POST", headers: { "Content-Type": "application/json" }, credentials: "same-origin",
    body: JSON.stringify({ principal: f.get("principal"), password: f.get("password"), code: f.get("code") }) });
  if (!r.ok) { const b = await r.json().catch(() => ({})); $("login-error").textContent = b.detail || b.error || r.statusText; return; }
  ev.target.reset();
  await start();
});
$("logout").addEventListener("click", async () => {
  await fetch("/api/logout", { method: "POST", headers: { "Content-Type": "application/json" }, credentials: "same-origin", body: "{}" });
  if (live) live.close();
  areaData = null; featureOf = null; cb.area = ""; showLogin();
});
$("lang").addEventListener("click", () => { cb.lang = cb.lang === "zh" ? "en" : "zh"; localStorage.setItem("cb-lang", cb.lang); translate(); if (cb.page && cb.me) show(cb.page); });
$("city-sensor").addEventListener("change", drawMap);
$("screen").addEventListener("click", () => { location.href = `${location.pathname}?screen=1#city`; });
$("screen-exit").addEventListener("click", () => { location.href = `${location.pathname}#${cb.page || "city"}`; });
$("city-whistle").addEventListener("click", () => { if (cb.cityEvent) openAct("whistle", "city_event", cb.cityEvent.event_id, cb.cityEvent.title); });
$("act-form").addEventListener("submit", (ev) => { ev.preventDefault(); sendAct(); });
$("act-cancel").addEventListener("click", () => $("act-dialog").close());
$("reply-form").addEventListener("submit", (ev) => { ev.preventDefault(); sendReply(); });
$("reply-cancel").addEventListener("click", () => $("reply-dialog").close());
$("hotline-ranking-scope").addEventListener("change", drawRankings);
$("orders-form").addEventListener("submit", (ev) => { ev.preventDefault(); location.hash = "orders"; show("orders"); });
["orders-area", "orders-department", "orders-status", "orders-overdue"].forEach((id) => $(id).addEventListener("change", () => {
  location.hash = "orders"; show("orders");
}));
window.addEventListener("resize", () => Object.values(cb.charts).forEach((c) => c.resize()));
start();
