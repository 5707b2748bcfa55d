//! Names in a client certificate, for mTLS identities. Pure, and only ever run on a certificate
//! rustls has already verified against the configured CA; still parsed defensively (every
//! length checked, no recursion), because a CA can sign odd certificates.
//!
//! A service account is known by a typed name: a SAN URI (a SPIFFE ID such as
//! `spiffe://prod.example/ns/ml/sa/summarizer`), a SAN DNS name, or — only for certificates
//! without a SAN extension — the subject CN. Rules name the type, so a CN that merely looks like a
//! SPIFFE ID never passes for one.

/// One DER element: tag and contents.
struct Tlv<'a> {
    tag: u8,
    body: &'a [u8],
}

/// Reads one element from the front of `input`; returns it and the rest.
fn tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        n if n < 0x80 => (n as usize, rest),
        0x81..=0x84 => {
            let k = (first & 0x7f) as usize;
            let bytes = rest.get(..k)?;
            let len = bytes.iter().fold(0usize, |acc, &b| (acc << 8) | b as usize);
            (len, &rest[k..])
        }
        _ => return None,
    };
    let body = rest.get(..len)?;
    Some((Tlv { tag, body }, &rest[len..]))
}

/// The elements of a constructed element's body, in order.
fn children(mut body: &[u8]) -> impl Iterator<Item = Tlv<'_>> {
    std::iter::from_fn(move || {
        let (t, rest) = tlv(body)?;
        body = rest;
        Some(t)
    })
}

const SEQUENCE: u8 = 0x30;
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];

/// The names a certificate holder is known by.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HolderNames {
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    /// The subject CN, only when the certificate has no SAN extension.
    pub cn: Option<String>,
}

/// The names of a certificate (DER), or `None` if it cannot be read.
pub fn holder_names(der: &[u8]) -> Option<HolderNames> {
    let (cert, _) = tlv(der).filter(|(t, _)| t.tag == SEQUENCE)?;
    let (tbs, _) = tlv(cert.body).filter(|(t, _)| t.tag == SEQUENCE)?;
    let fields: Vec<Tlv<'_>> = children(tbs.body).collect();
    // [0] version is optional; the subject is the 5th field after it.
    let skip = usize::from(fields.first()?.tag == 0xa0);
    let subject = fields.get(skip + 4).filter(|t| t.tag == SEQUENCE)?;
    let extensions = fields.iter().find(|t| t.tag == 0xa3);
    match extensions.and_then(|e| san_names(e.body)) {
        Some((uris, dns)) => Some(HolderNames {
            uris,
            dns,
            cn: None,
        }),
        None => Some(HolderNames {
            cn: common_name(subject.body),
            ..HolderNames::default()
        }),
    }
}

/// The first name a certificate would be matched by (URI, else DNS, else CN): for logs.
pub fn holder_name(der: &[u8]) -> Option<String> {
    let n = holder_names(der)?;
    n.uris.into_iter().chain(n.dns).next().or(n.cn)
}

/// The SAN extension's URIs and DNS names; `None` when there is no SAN extension.
fn san_names(explicit: &[u8]) -> Option<(Vec<String>, Vec<String>)> {
    let (list, _) = tlv(explicit).filter(|(t, _)| t.tag == SEQUENCE)?;
    let ext = children(list.body).find(|ext| {
        children(ext.body)
            .next()
            .is_some_and(|oid| oid.tag == 0x06 && oid.body == OID_SAN)
    })?;
    // extnID, [critical], extnValue (OCTET STRING holding GeneralNames).
    let value = children(ext.body).find(|t| t.tag == 0x04)?;
    let (names, _) = tlv(value.body).filter(|(t, _)| t.tag == SEQUENCE)?;
    let names: Vec<Tlv<'_>> = children(names.body).collect();
    let all = |tag: u8| -> Vec<String> {
        names
            .iter()
            .filter(|n| n.tag == tag)
            .filter_map(|n| std::str::from_utf8(n.body).ok())
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_owned)
            .collect()
    };
    Some((all(0x86), all(0x82)))
}

/// The subject's CN (UTF8String, PrintableString or IA5String).
fn common_name(subject: &[u8]) -> Option<String> {
    children(subject)
        .flat_map(|rdn| children(rdn.body))
        .find_map(|atv| {
            let mut parts = children(atv.body);
            let oid = parts.next()?;
            let value = parts.next()?;
            (oid.tag == 0x06 && oid.body == OID_CN && matches!(value.tag, 0x0c | 0x13 | 0x16))
                .then(|| std::str::from_utf8(value.body).ok().map(str::to_owned))
                .flatten()
        })
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openssl_cert(subj: &str, san: Option<&str>) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("k.pem"), dir.path().join("c.der"));
        let mut cmd = std::process::Command::new("openssl");
        cmd.args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-outform", "DER", "-subj", subj])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert);
        if let Some(san) = san {
            cmd.args(["-addext", &format!("subjectAltName={san}")]);
        }
        assert!(cmd.output().unwrap().status.success());
        std::fs::read(cert).unwrap()
    }

    #[test]
    fn names_are_typed_and_the_cn_counts_only_without_a_san() {
        let spiffe = "spiffe://prod.example/ns/ml/sa/summarizer";
        let both = openssl_cert(
            "/CN=ignored",
            Some(&format!("DNS:svc.example,URI:{spiffe}")),
        );
        let n = holder_names(&both).unwrap();
        assert_eq!(n.uris, vec![spiffe.to_string()]);
        assert_eq!((n.dns, n.cn), (vec!["svc.example".to_string()], None));
        assert_eq!(holder_name(&both).as_deref(), Some(spiffe));
        // A SAN with only an email: the CN does not count (it could say anything).
        let email = openssl_cert("/CN=svc.example", Some("email:a@b.example"));
        assert_eq!(holder_names(&email).unwrap(), HolderNames::default());
        let cn = openssl_cert("/O=ml/CN=batch-runner", None);
        assert_eq!(
            holder_names(&cn).unwrap().cn.as_deref(),
            Some("batch-runner")
        );
    }

    #[test]
    fn garbage_and_every_truncation_give_none_without_panicking() {
        let der = openssl_cert("/CN=x", Some("URI:spiffe://a/b"));
        assert!(holder_name(b"").is_none());
        assert!(holder_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
        for cut in 0..der.len() {
            assert!(holder_name(&der[..cut]).is_none(), "cut at {cut}");
        }
    }
}
