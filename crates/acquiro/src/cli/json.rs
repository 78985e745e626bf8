//! Messages as JSON objects: `{"mti":"0200","fields":{"2":"4761...","3":"000000"}}`.
//!
//! Text fields are strings (Latin-1 characters, so every byte round-trips); binary fields are uppercase
//! hex. Masking is the codec's: a masked object shows what `Display` of each field shows.

use anyhow::{Context, anyhow, bail};
use iso8583::{FieldType, Message, Mti, Spec, tlv};
use serde_json::{Map, Value, json};

/// The JSON object of a message. `tlv` adds DE55 as a list of items under "tlv"; `unmasked` shows
/// secrets in clear.
pub(crate) fn to_json(msg: &Message, tlv_list: bool, unmasked: bool) -> Value {
    let mut fields = Map::new();
    for field in msg.fields() {
        let text = if unmasked {
            field.unmasked().to_string()
        } else {
            field.to_string()
        };
        fields.insert(field.number().to_string(), Value::String(text));
    }
    let mut obj = json!({ "mti": msg.mti().as_str(), "fields": fields });
    // EMV values can hold card data (5A, 57): masked output lists the tags and lengths only.
    if let Some(de55) = msg.get(55).filter(|_| tlv_list) {
        let items = match tlv::parse(55, &de55.to_vec()) {
            Ok(items) => Value::Array(
                items
                    .iter()
                    .map(|t| {
                        let value = if unmasked { hex::encode_upper(t.value) } else { "[redacted]".into() };
                        json!({ "tag": hex::encode_upper(t.tag), "len": t.value.len(), "value": value })
                    })
                    .collect(),
            ),
            Err(e) => json!({ "error": e.to_string() }),
        };
        obj["tlv"] = json!({ "55": items });
    }
    obj
}

/// A message from its JSON object. Unknown top-level keys other than "tlv" and "tpdu" are errors.
pub(crate) fn from_json(spec: &'static Spec, value: &Value) -> anyhow::Result<Message> {
    let obj = value
        .as_object()
        .ok_or_else(|| anyhow!("expected a JSON object"))?;
    if let Some(key) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "mti" | "fields" | "tlv" | "tpdu"))
    {
        bail!("unknown key {key:?}");
    }
    let mti = obj
        .get("mti")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("\"mti\" must be a string"))?;
    let mti: [u8; 4] = mti
        .as_bytes()
        .try_into()
        .map_err(|_| anyhow!("\"mti\" must be 4 digits"))?;
    let mut msg = Message::new(spec, Mti::new(mti)?);
    let fields = match obj.get("fields") {
        None => return Ok(msg),
        Some(f) => f
            .as_object()
            .ok_or_else(|| anyhow!("\"fields\" must be an object"))?,
    };
    for (key, value) in fields {
        let number: u8 = key
            .parse()
            .with_context(|| format!("field key {key:?} is not a field number"))?;
        let text = value
            .as_str()
            .ok_or_else(|| anyhow!("field {number}: value must be a string"))?;
        let fs = spec
            .field(number)
            .ok_or_else(|| anyhow!("field {number}: not in dialect {}", spec.name()))?;
        let bytes = if fs.kind == FieldType::B {
            hex::decode(text).with_context(|| format!("field {number}: binary fields are hex"))?
        } else {
            text.chars()
                .map(|c| {
                    u8::try_from(u32::from(c))
                        .map_err(|_| anyhow!("field {number}: {c:?} is not Latin-1"))
                })
                .collect::<anyhow::Result<_>>()?
        };
        msg.set(number, bytes)?;
    }
    Ok(msg)
}
