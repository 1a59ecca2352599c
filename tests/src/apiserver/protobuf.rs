//! The protobuf request bodies kubectl sends where it uses its typed clients (`kubectl create
//! secret`): the `k8s\0` envelope around a `runtime.Unknown`, decoded to the JSON object the
//! rest of the server stores. Only the kinds kubectl creates that way in podwall's docs are
//! read (Secret); anything else is a 415, which names what was sent.

use serde_json::{json, Map, Value};

use super::status::ApiError;

/// The media type of a protobuf body.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The JSON object a protobuf body holds.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let bad = |what: &str| ApiError::bad_request(format!("decoding a protobuf body: {what}"));
    let unknown = body
        .strip_prefix(b"k8s\0")
        .ok_or_else(|| bad("no k8s envelope"))?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (field, value) in fields(unknown).map_err(bad)? {
        match (field, value) {
            (1, Wire::Bytes(type_meta)) => {
                for (f, v) in fields(type_meta).map_err(bad)? {
                    match (f, v) {
                        (1, Wire::Bytes(s)) => api_version = text(s).map_err(bad)?,
                        (2, Wire::Bytes(s)) => kind = text(s).map_err(bad)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Secret") => secret(raw).map_err(bad),
        _ => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("this server reads protobuf bodies of v1 Secrets only, not {api_version}/{kind}; send JSON"),
        )),
    }
}

/// `k8s.io.api.core.v1.Secret`: metadata (1), data (2), type (3), stringData (4), immutable (5).
fn secret(raw: &[u8]) -> Result<Value, &'static str> {
    let mut obj = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {}});
    for (field, value) in fields(raw)? {
        match (field, value) {
            (1, Wire::Bytes(m)) => obj["metadata"] = object_meta(m)?,
            (2, Wire::Bytes(entry)) => {
                let (k, v) = map_entry(entry)?;
                obj["data"][k] = json!(base64(v));
            }
            (3, Wire::Bytes(t)) => obj["type"] = json!(text(t)?),
            (4, Wire::Bytes(entry)) => {
                let (k, v) = map_entry(entry)?;
                obj["stringData"][k] = json!(text(v)?);
            }
            (5, Wire::Varint(b)) => obj["immutable"] = json!(b != 0),
            _ => {}
        }
    }
    Ok(obj)
}

/// `ObjectMeta`: name (1), generateName (2), namespace (3), labels (11), annotations (12).
fn object_meta(raw: &[u8]) -> Result<Value, &'static str> {
    let mut meta = Map::new();
    for (field, value) in fields(raw)? {
        let Wire::Bytes(b) = value else { continue };
        let key = match field {
            1 => "name",
            2 => "generateName",
            3 => "namespace",
            11 => "labels",
            12 => "annotations",
            _ => continue,
        };
        if field >= 11 {
            let (k, v) = map_entry(b)?;
            let map = meta.entry(key).or_insert_with(|| json!({}));
            map[k] = json!(text(v)?);
        } else {
            if !b.is_empty() {
                meta.insert(key.to_string(), json!(text(b)?));
            }
        }
    }
    Ok(Value::Object(meta))
}

fn map_entry(raw: &[u8]) -> Result<(String, &[u8]), &'static str> {
    let (mut key, mut value) = (String::new(), &[][..]);
    for (field, v) in fields(raw)? {
        match (field, v) {
            (1, Wire::Bytes(k)) => key = text(k)?,
            (2, Wire::Bytes(v)) => value = v,
            _ => {}
        }
    }
    Ok((key, value))
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of one message, in order.
fn fields(mut buf: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, &'static str> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let tag = varint(&mut buf)?;
        let value = match tag & 7 {
            0 => Wire::Varint(varint(&mut buf)?),
            1 | 5 => {
                let n = if tag & 7 == 1 { 8 } else { 4 };
                buf = buf.get(n..).ok_or("a fixed-width field is cut short")?;
                Wire::Fixed
            }
            2 => {
                let len = usize::try_from(varint(&mut buf)?).map_err(|_| "a length overflows")?;
                let bytes = buf.get(..len).ok_or("a length runs past the end")?;
                buf = &buf[len..];
                Wire::Bytes(bytes)
            }
            _ => return Err("an unknown wire type"),
        };
        out.push((tag >> 3, value));
    }
    Ok(out)
}

fn varint(buf: &mut &[u8]) -> Result<u64, &'static str> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf.split_first().ok_or("a varint is cut short")?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("a varint is too long")
}

fn text(b: &[u8]) -> Result<String, &'static str> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string is not UTF-8")
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![n << 3 | 2, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn a_secret_in_its_envelope_reads_as_json() {
        let meta = [field(1, b"pull"), field(3, b"kube-system")].concat();
        let data = [field(1, b".dockerconfigjson"), field(2, b"{}\n")].concat();
        let secret = [
            field(1, &meta),
            field(2, &data),
            field(3, b"kubernetes.io/dockerconfigjson"),
        ]
        .concat();
        let type_meta = [field(1, b"v1"), field(2, b"Secret")].concat();
        let body = [&b"k8s\0"[..], &field(1, &type_meta), &field(2, &secret)].concat();
        let obj = decode(&body).expect("decodes");
        assert_eq!(
            obj["metadata"],
            json!({"name": "pull", "namespace": "kube-system"})
        );
        assert_eq!(obj["data"][".dockerconfigjson"], "e30K");
        assert_eq!(obj["type"], "kubernetes.io/dockerconfigjson");
    }

    #[test]
    fn other_kinds_and_broken_bodies_are_errors() {
        let type_meta = [field(1, b"v1"), field(2, b"Pod")].concat();
        let body = [&b"k8s\0"[..], &field(1, &type_meta)].concat();
        assert_eq!(decode(&body).expect_err("a Pod").code, 415);
        assert_eq!(decode(b"k8s\0\x0a\x7f").expect_err("cut").code, 400);
        assert_eq!(decode(b"{}").expect_err("JSON").code, 400);
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }
}
