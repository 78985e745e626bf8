//! The TOML form of a dialect. Every table rejects unknown keys, so a typo is an error naming the key.

use std::collections::BTreeMap;

use iso8583::{
    BitmapEncoding, Encoding, FieldSpec, FieldType, Filler, LengthKind, Pad, Sensitivity, Spec,
    Subfield, TotalsLayout,
};
use serde::Deserialize;

use crate::Error;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    mti: Enc,
    bitmap: Bitmap,
    /// Bit 65 announces a third bitmap and fields 129–192 may be described.
    #[serde(default)]
    tertiary_bitmap: bool,
    length_encoding: Enc,
    encoding: TypeEncodings,
    #[serde(default)]
    filler: Fillers,
    fields: BTreeMap<String, FieldDef>,
    /// Where the terminals carry their settlement totals, when not in DE74, DE76, DE86 and DE88.
    settlement_totals: Option<TotalsDef>,
}

/// `[settlement_totals]`: a field, and each total's `[offset, length]` in its characters.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TotalsDef {
    field: u8,
    credits: [usize; 2],
    debits: [usize; 2],
    credit_amount: [usize; 2],
    debit_amount: [usize; 2],
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Enc {
    Ascii,
    Ebcdic,
    Bcd,
    Binary,
    Hex,
}

impl From<Enc> for Encoding {
    fn from(e: Enc) -> Encoding {
        match e {
            Enc::Ascii => Encoding::Ascii,
            Enc::Ebcdic => Encoding::Ebcdic,
            Enc::Bcd => Encoding::Bcd,
            Enc::Binary => Encoding::Binary,
            Enc::Hex => Encoding::Hex,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Bitmap {
    Binary,
    Hex,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypeEncodings {
    n: Enc,
    z: Enc,
    #[serde(rename = "x+n")]
    xn: Enc,
    an: Enc,
    ans: Enc,
    b: Enc,
}

#[derive(Deserialize, Clone, Copy)]
enum FillerDef {
    #[serde(rename = "left-0")]
    Left0,
    #[serde(rename = "left-F")]
    LeftF,
    #[serde(rename = "right-0")]
    Right0,
    #[serde(rename = "right-F")]
    RightF,
}

impl From<FillerDef> for Filler {
    fn from(f: FillerDef) -> Filler {
        match f {
            FillerDef::Left0 => Filler::Left0,
            FillerDef::LeftF => Filler::LeftF,
            FillerDef::Right0 => Filler::Right0,
            FillerDef::RightF => Filler::RightF,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fillers {
    fixed: FillerDef,
    variable: FillerDef,
}

impl Default for Fillers {
    fn default() -> Self {
        Fillers {
            fixed: FillerDef::Left0,
            variable: FillerDef::RightF,
        }
    }
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
enum TypeDef {
    #[serde(rename = "n")]
    N,
    #[serde(rename = "an")]
    An,
    #[serde(rename = "ans")]
    Ans,
    #[serde(rename = "b")]
    B,
    #[serde(rename = "z")]
    Z,
    #[serde(rename = "x+n")]
    Xn,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
enum LengthDef {
    #[default]
    #[serde(rename = "fixed")]
    Fixed,
    #[serde(rename = "LL")]
    Ll,
    #[serde(rename = "LLL")]
    Lll,
    #[serde(rename = "LLLL")]
    Llll,
}

#[derive(Deserialize, Clone, Copy)]
enum PadDef {
    #[serde(rename = "none")]
    None,
    #[serde(rename = "left-0")]
    Left0,
    #[serde(rename = "right-space")]
    RightSpace,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum SensitivityDef {
    #[default]
    Clear,
    Pan,
    Secret,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldDef {
    name: String,
    #[serde(rename = "type")]
    kind: TypeDef,
    #[serde(default)]
    length: LengthDef,
    max: u16,
    encoding: Option<Enc>,
    length_encoding: Option<Enc>,
    filler: Option<FillerDef>,
    pad: Option<PadDef>,
    #[serde(default)]
    sensitivity: SensitivityDef,
    #[serde(default)]
    subfields: Vec<SubfieldDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubfieldDef {
    name: String,
    len: u16,
}

pub(crate) fn parse(origin: &str, text: &str) -> Result<Spec, Error> {
    let file: File = toml::from_str(text).map_err(|source| Error::Syntax {
        origin: origin.to_owned(),
        source,
    })?;
    let mut fields = Vec::with_capacity(file.fields.len());
    for (key, def) in file.fields {
        let number = key.parse::<u8>().map_err(|_| Error::Key {
            origin: origin.to_owned(),
            key: key.clone(),
            reason: "not a field number",
        })?;
        fields.push((
            number,
            field_spec(&file.encoding, &file.filler, file.length_encoding, def),
        ));
    }
    let bitmap = match file.bitmap {
        Bitmap::Binary => BitmapEncoding::Binary,
        Bitmap::Hex => BitmapEncoding::Hex,
    };
    let invalid = |source| Error::Invalid {
        origin: origin.to_owned(),
        source,
    };
    let spec = Spec::new(
        file.name,
        file.mti.into(),
        bitmap,
        file.tertiary_bitmap,
        fields,
    )
    .map_err(invalid)?;
    match file.settlement_totals {
        None => Ok(spec),
        Some(t) => {
            let place = |[offset, len]: [usize; 2]| (offset, len);
            let layout = TotalsLayout {
                field: t.field,
                credits: place(t.credits),
                debits: place(t.debits),
                credit_amount: place(t.credit_amount),
                debit_amount: place(t.debit_amount),
            };
            spec.with_totals(layout).map_err(invalid)
        }
    }
}

fn field_spec(
    types: &TypeEncodings,
    fillers: &Fillers,
    length_encoding: Enc,
    def: FieldDef,
) -> FieldSpec {
    let (kind, type_encoding) = match def.kind {
        TypeDef::N => (FieldType::N, types.n),
        TypeDef::An => (FieldType::An, types.an),
        TypeDef::Ans => (FieldType::Ans, types.ans),
        TypeDef::B => (FieldType::B, types.b),
        TypeDef::Z => (FieldType::Z, types.z),
        TypeDef::Xn => (FieldType::Xn, types.xn),
    };
    let length = match def.length {
        LengthDef::Fixed => LengthKind::Fixed,
        LengthDef::Ll => LengthKind::Ll,
        LengthDef::Lll => LengthKind::Lll,
        LengthDef::Llll => LengthKind::Llll,
    };
    let default_filler = if length == LengthKind::Fixed {
        fillers.fixed
    } else {
        fillers.variable
    };
    // A short value of a fixed field is padded as ISO 8583 pads it: numbers right-justified with zeros,
    // text left-justified with spaces. Binary, track and signed-amount fields must come whole.
    let default_pad = match kind {
        FieldType::N => PadDef::Left0,
        FieldType::An | FieldType::Ans => PadDef::RightSpace,
        FieldType::B | FieldType::Z | FieldType::Xn => PadDef::None,
    };
    let pad = match def.pad.unwrap_or(default_pad) {
        PadDef::None => None,
        PadDef::Left0 => Some(Pad {
            left: true,
            byte: b'0',
        }),
        PadDef::RightSpace => Some(Pad {
            left: false,
            byte: b' ',
        }),
    };
    FieldSpec {
        name: def.name,
        kind,
        length,
        max: def.max,
        encoding: def.encoding.unwrap_or(type_encoding).into(),
        length_encoding: def.length_encoding.unwrap_or(length_encoding).into(),
        filler: def.filler.unwrap_or(default_filler).into(),
        pad,
        sensitivity: match def.sensitivity {
            SensitivityDef::Clear => Sensitivity::Clear,
            SensitivityDef::Pan => Sensitivity::Pan,
            SensitivityDef::Secret => Sensitivity::Secret,
        },
        subfields: def
            .subfields
            .into_iter()
            .map(|s| Subfield {
                name: s.name,
                len: s.len,
            })
            .collect(),
    }
}
