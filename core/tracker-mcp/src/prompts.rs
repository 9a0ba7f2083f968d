//! Prompts: a few tasks people bring to an assistant, written as the sequence of tools that answers them.

use serde_json::{Map, Value, json};

struct Prompt {
    name: &'static str,
    title: &'static str,
    description: &'static str,
    /// `(name, description, required)`
    arguments: &'static [(&'static str, &'static str, bool)],
}

const PROMPTS: &[Prompt] = &[
    Prompt {
        name: "weekly_report",
        title: "Weekly report",
        description: "A report of the last seven days: events by type and day, the best links, conversions, drops \
                      and usage against the plan.",
        arguments: &[("conversion_type", "The event type that counts as a conversion (default `conversion`).", false)],
    },
    Prompt {
        name: "conversions_drop",
        title: "Why did conversions drop this week?",
        description: "Compares this week with the one before, by link, by param and in the drop ledger, and checks \
                      the webhook endpoints and filter rules that could explain a fall.",
        arguments: &[
            ("conversion_type", "The event type that counts as a conversion (default `conversion`).", false),
            ("click_type", "The event type of the clicks that lead to conversions (default `click`).", false),
        ],
    },
    Prompt {
        name: "new_campaign",
        title: "Set up tracking for a new campaign",
        description: "Creates the campaign's tracking link, signs per-channel variants, makes sure conversions can \
                      come in (an ingest token or postbacks) and gives the beacon tag for the landing page.",
        arguments: &[
            ("destination", "The landing page URL the campaign sends people to.", true),
            ("campaign", "A short name for the campaign (used as the link name and a `campaign` param).", true),
            ("channels", "Comma-separated channels to sign variants for, e.g. `google,meta,newsletter`.", false),
        ],
    },
];

/// The prompts as `prompts/list` answers them.
pub fn list() -> Vec<Value> {
    PROMPTS
        .iter()
        .map(|p| {
            let arguments: Vec<Value> = p
                .arguments
                .iter()
                .map(|(name, description, required)| {
                    json!({ "name": name, "description": description, "required": required })
                })
                .collect();
            json!({ "name": p.name, "title": p.title, "description": p.description, "arguments": arguments })
        })
        .collect()
}

/// One prompt with its arguments filled in (a `GetPromptResult`); `Err` says what is missing or unknown.
pub fn get(name: &str, args: &Map<String, Value>) -> Result<Value, String> {
    let prompt = PROMPTS.iter().find(|p| p.name == name).ok_or_else(|| format!("no prompt named {name}"))?;
    if let Some(unknown) = args.keys().find(|k| !prompt.arguments.iter().any(|(n, _, _)| n == k)) {
        return Err(format!("{name} has no argument `{unknown}`"));
    }
    let arg = |key: &str, default: &str| -> Result<String, String> {
        match args.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
            None | Some(Value::Null) => Ok(default.to_owned()),
            _ => Err(format!("`{key}` must be a non-empty string")),
        }
    };
    for (key, _, required) in prompt.arguments {
        if *required && arg(key, "")?.is_empty() {
            return Err(format!("{name} needs `{key}`"));
        }
    }
    let text = match name {
        "weekly_report" => {
            let conversion = arg("conversion_type", "conversion")?;
            format!(
                "Write a report of my tracking for the last 7 days.\n\
                 1. event_stats with hours=168 and group_by=event_type: events per type and day.\n\
                 2. event_stats with hours=168 and group_by=tu_id, then get_link for the five busiest links.\n\
                 3. match_events with trigger=click, result={conversion}, on=click_id, hours=168: conversions and \
                 time to convert.\n\
                 4. list_drops with hours=168: what was filtered (bots, rate limits, rules) and whether it looks \
                 wrong.\n\
                 5. get_usage and preview_invoice: events used against the plan this month.\n\
                 Answer with a short summary first, then a table per section. Say which numbers went up or down \
                 against the week before (event_stats with hours=336) by how much."
            )
        }
        "conversions_drop" => {
            let conversion = arg("conversion_type", "conversion")?;
            let click = arg("click_type", "click")?;
            format!(
                "Conversions ({conversion} events) seem lower this week. Find out why.\n\
                 1. event_stats with hours=336, interval=hour, event_type={conversion}: when did the fall begin?\n\
                 2. The same for {click}: did traffic fall too, or only the conversion rate?\n\
                 3. event_stats grouped by tu_id and by param:<key> (for the params the events carry, see \
                 list_events) for both weeks: which links, campaigns or sources lost the most?\n\
                 4. list_drops and list_drop_samples: are {conversion} events being dropped (a rule, a rate limit, \
                 the quota, an origin the beacon does not accept)?\n\
                 5. list_rules and list_webhooks, list_webhook_deliveries with status=dead: did a rule or a \
                 failing endpoint change around the start of the fall?\n\
                 6. get_intake: are postbacks without a credential refused or over their monthly budget?\n\
                 Answer with the most likely cause first, the evidence for it, and what to change."
            )
        }
        "new_campaign" => {
            let destination = arg("destination", "")?;
            let campaign = arg("campaign", "")?;
            let channels = arg("channels", "")?;
            let variants = if channels.is_empty() {
                String::new()
            } else {
                format!(
                    "3. For each channel of `{channels}`: sign_link with tu_id set to the new link and params \
                     {{\"campaign\": \"{campaign}\", \"source\": \"<channel>\"}}, one signed URL per channel.\n"
                )
            };
            format!(
                "Set up tracking for the campaign `{campaign}`, which sends people to {destination}.\n\
                 1. list_links: is there already a link to this destination? Reuse it if so.\n\
                 2. Otherwise create_link with destination={destination} and name={campaign}.\n\
                 {variants}\
                 4. list_ingest_tokens: if there is no ingest token for server-side conversions, offer to create one \
                 with create_ingest_token (its secret is shown once: tell the user to store it).\n\
                 5. get_beacon: give the script tag for the landing page, and check with get_intake that \
                 conversions from postbacks are accepted.\n\
                 Finish with the links to put in the ads, the tag for the site, and how to send a conversion."
            )
        }
        _ => return Err(format!("no prompt named {name}")),
    };
    Ok(json!({
        "description": prompt.description,
        "messages": [{ "role": "user", "content": { "type": "text", "text": text } }],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_fill_in_their_arguments_and_refuse_bad_ones() {
        let args = |v: Value| v.as_object().cloned().unwrap_or_default();
        let p = get("new_campaign", &args(json!({"destination": "https://shop.example/sale", "campaign": "sale"})));
        let text = p.expect("prompt")["messages"][0]["content"]["text"].as_str().unwrap_or_default().to_owned();
        assert!(text.contains("destination=https://shop.example/sale") && !text.contains("For each channel"));
        let missing = get("new_campaign", &args(json!({"campaign": "sale"}))).expect_err("destination");
        assert!(missing.contains("needs `destination`"), "{missing}");
        assert!(get("weekly_report", &args(json!({"tenant": "x"}))).is_err());
        assert!(get("nope", &Map::new()).is_err());
        assert_eq!(list().len(), PROMPTS.len());
    }

    /// Every `snake_case` word of a prompt is a tool of the real API, or one of the parameter names it uses.
    #[test]
    fn prompts_name_only_tools_that_exist() {
        let doc = include_str!("../../tracker-core/src/http/api/openapi.json");
        let catalog = crate::Catalog::from_openapi(doc).expect("the API's tools");
        let params = ["group_by", "event_type", "tu_id", "click_id", "window_secs", "next_cursor", "status=dead"];
        let filled = json!({"destination": "https://a.example/", "campaign": "c", "channels": "google,meta"});
        for p in PROMPTS {
            let text = get(p.name, filled.as_object().filter(|_| p.name == "new_campaign").unwrap_or(&Map::new()))
                .expect("prompt")["messages"][0]["content"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            for word in text.split(|c: char| !(c.is_ascii_lowercase() || c == '_' || c == '=')) {
                let word = word.split('=').next().unwrap_or_default();
                if word.contains('_') && !word.starts_with('_') && !word.ends_with('_') {
                    let known = catalog.tool(word).is_some() || params.iter().any(|p| p.starts_with(word));
                    assert!(known, "{} names `{word}`, which is no tool", p.name);
                }
            }
        }
    }
}
