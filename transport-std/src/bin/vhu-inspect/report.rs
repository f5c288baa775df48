//! The report: what the back-end offers and how each check came out, as a table for people or
//! as one JSON document for programs (features by name).

use crate::checks::{Check, Outcome};
use crate::probe::{protocol_names, virtio_names, Offers};

fn outcome(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "pass",
        Outcome::Fail => "FAIL",
        Outcome::Skip => "skip",
    }
}

pub(crate) fn table(socket: &str, offers: &Offers, checks: &[Check]) -> String {
    let mut out = format!("vhost-user back-end at {socket}\n\n");
    out += &format!("  virtio features   {:#018x}\n", offers.features);
    for chunk in virtio_names(offers.features).chunks(6) {
        out += &format!("                    {}\n", chunk.join(" "));
    }
    match offers.protocol {
        Some(p) => {
            out += &format!("  protocol features {p:#018x}\n");
            for chunk in protocol_names(p).chunks(5) {
                out += &format!("                    {}\n", chunk.join(" "));
            }
        }
        None => out += "  protocol features (VHOST_USER_F_PROTOCOL_FEATURES not offered)\n",
    }
    let or_dash = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    out += &format!("  queues            {}\n", or_dash(offers.queues));
    out += &format!("  largest ring      {}\n", or_dash(offers.max_queue_size.map(u64::from)));
    out += &format!("  memory slots      {}\n", or_dash(offers.mem_slots));
    match &offers.config {
        Some(c) => out += &format!("  config space      {} bytes: {}\n", c.len(), hex(c)),
        None => out += "  config space      -\n",
    }
    match &offers.shmem {
        Some(s) => out += &format!("  shared memory     {s:?}\n"),
        None => out += "  shared memory     -\n",
    }
    let state = offers.offers(vhu_transport_std::vhu_core::ProtocolFeatures::DEVICE_STATE);
    out += &format!("  device state      {}\n\n", if state { "yes (DEVICE_STATE)" } else { "no" });
    for c in checks {
        out += &format!("  {:<4} {:<18} {}\n", outcome(c.outcome), c.id, c.rule);
        out += &format!("       {:<18} spec: {}; {}\n", "", c.section, c.detail);
    }
    let failed = checks.iter().filter(|c| c.outcome == Outcome::Fail).count();
    out += &format!(
        "\n{} checks: {} passed, {failed} failed, {} skipped\n",
        checks.len(),
        checks.iter().filter(|c| c.outcome == Outcome::Pass).count(),
        checks.iter().filter(|c| c.outcome == Outcome::Skip).count()
    );
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A JSON string literal.
fn string(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            c if (c as u32) < 0x20 => out += &format!("\\u{:04x}", c as u32),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn names(list: &[String]) -> String {
    let items: Vec<String> = list.iter().map(|n| string(n)).collect();
    format!("[{}]", items.join(", "))
}

pub(crate) fn json(socket: &str, offers: &Offers, checks: &[Check]) -> String {
    let opt = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
    let mut fields = vec![
        format!("\"socket\": {}", string(socket)),
        format!("\"features\": {}", offers.features),
        format!("\"feature_names\": {}", names(&virtio_names(offers.features))),
        format!("\"protocol_features\": {}", opt(offers.protocol)),
        format!(
            "\"protocol_feature_names\": {}",
            names(&offers.protocol.map(protocol_names).unwrap_or_default())
        ),
        format!("\"queues\": {}", opt(offers.queues)),
        format!("\"memory_slots\": {}", opt(offers.mem_slots)),
        format!("\"max_queue_size\": {}", opt(offers.max_queue_size.map(u64::from))),
        format!(
            "\"config\": {}",
            offers.config.as_ref().map_or("null".into(), |c| string(&hex(c)))
        ),
        format!(
            "\"shared_memory\": {}",
            offers.shmem.as_ref().map_or("null".into(), |s| format!("{s:?}"))
        ),
        format!(
            "\"device_state\": {}",
            offers.offers(vhu_transport_std::vhu_core::ProtocolFeatures::DEVICE_STATE)
        ),
    ];
    let checks: Vec<String> = checks
        .iter()
        .map(|c| {
            format!(
                "{{\"id\": {}, \"rule\": {}, \"spec\": {}, \"outcome\": {}, \"detail\": {}}}",
                string(c.id),
                string(c.rule),
                string(c.section),
                string(outcome(c.outcome).to_lowercase().as_str()),
                string(&c.detail)
            )
        })
        .collect();
    fields.push(format!("\"checks\": [\n    {}\n  ]", checks.join(",\n    ")));
    fields.push(format!(
        "\"conforms\": {}",
        checks.iter().all(|c| !c.contains("\"outcome\": \"fail\""))
    ));
    format!("{{\n  {}\n}}\n", fields.join(",\n  "))
}
