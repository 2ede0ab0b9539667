//! Kubernetes protobuf request bodies (kubectl's typed commands send them)
//! rewritten into the tenant's storage terms without knowing the concrete
//! type: every top-level object keeps its ObjectMeta in field 1, whose
//! namespace is field 3, name field 1 and labels field 11; RBAC bindings
//! keep their subjects in field 2 with the namespace in field 4.
//!
//! Layout: the magic `k8s\0`, then a `runtime.Unknown` message: field 1
//! TypeMeta (1 apiVersion, 2 kind), field 2 the object's own bytes.

use arktos_crds::naming::TENANT_LABEL;
use arktos_crds::status;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;

pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

/// One field of a message: number, wire type, and its bytes (the varint
/// value re-encoded, or the length-delimited payload).
#[derive(Clone, Debug, PartialEq)]
struct Field {
    number: u64,
    wire: u8,
    data: Vec<u8>,
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn write_varint(mut value: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn parse(bytes: &[u8]) -> Option<Vec<Field>> {
    let mut fields = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let key = read_varint(bytes, &mut at)?;
        let (number, wire) = (key >> 3, (key & 7) as u8);
        let data = match wire {
            0 => {
                let start = at;
                read_varint(bytes, &mut at)?;
                bytes[start..at].to_vec()
            }
            1 => {
                at += 8;
                bytes.get(at - 8..at)?.to_vec()
            }
            2 => {
                let len = usize::try_from(read_varint(bytes, &mut at)?).ok()?;
                at += len;
                bytes.get(at - len..at)?.to_vec()
            }
            5 => {
                at += 4;
                bytes.get(at - 4..at)?.to_vec()
            }
            _ => return None,
        };
        fields.push(Field { number, wire, data });
    }
    Some(fields)
}

fn encode(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    for field in fields {
        write_varint((field.number << 3) | u64::from(field.wire), &mut out);
        if field.wire == 2 {
            write_varint(field.data.len() as u64, &mut out);
        }
        out.extend_from_slice(&field.data);
    }
    out
}

fn string_field(number: u64, text: &str) -> Field {
    Field {
        number,
        wire: 2,
        data: text.as_bytes().to_vec(),
    }
}

fn text(field: &Field) -> Option<&str> {
    std::str::from_utf8(&field.data).ok()
}

fn malformed() -> Status {
    status::bad_request("the protobuf body is malformed")
}

/// Rewrites a protobuf request body. `map_namespace` maps a tenant
/// namespace name into storage terms; `label` is stamped on the object.
pub fn rewrite(
    body: &[u8],
    map_namespace: &dyn Fn(&str) -> Result<String, Status>,
    label: Option<(&str, &str)>,
) -> Result<Vec<u8>, Status> {
    let envelope = body.strip_prefix(MAGIC).ok_or_else(malformed)?;
    let mut unknown = parse(envelope).ok_or_else(malformed)?;
    let kind = unknown
        .iter()
        .find(|f| f.number == 1)
        .and_then(|type_meta| parse(&type_meta.data))
        .and_then(|fields| {
            fields
                .iter()
                .find(|f| f.number == 2)
                .and_then(text)
                .map(str::to_string)
        })
        .unwrap_or_default();
    let raw = unknown
        .iter_mut()
        .find(|f| f.number == 2)
        .ok_or_else(malformed)?;
    let mut object = parse(&raw.data).ok_or_else(malformed)?;
    for field in object.iter_mut() {
        match field.number {
            1 if field.wire == 2 => {
                field.data = rewrite_metadata(&field.data, &kind, map_namespace, label)?
            }
            2 if field.wire == 2 && kind.ends_with("RoleBinding") => {
                let mut subject = parse(&field.data).ok_or_else(malformed)?;
                // Protobuf writes empty strings too: a User or Group
                // subject has an empty namespace, which stays empty.
                for part in subject.iter_mut().filter(|f| f.number == 4) {
                    let namespace = text(part).ok_or_else(malformed)?;
                    if !namespace.is_empty() {
                        let mapped = map_namespace(namespace)?;
                        *part = string_field(4, &mapped);
                    }
                }
                field.data = encode(&subject);
            }
            _ => {}
        }
    }
    raw.data = encode(&object);
    let mut out = MAGIC.to_vec();
    out.extend(encode(&unknown));
    Ok(out)
}

fn rewrite_metadata(
    bytes: &[u8],
    kind: &str,
    map_namespace: &dyn Fn(&str) -> Result<String, Status>,
    label: Option<(&str, &str)>,
) -> Result<Vec<u8>, Status> {
    let mut metadata = parse(bytes).ok_or_else(malformed)?;
    for field in metadata.iter_mut() {
        let remap = field.number == 3 || (kind == "Namespace" && field.number == 1);
        if remap && field.wire == 2 {
            let value = text(field).ok_or_else(malformed)?;
            if !value.is_empty() {
                *field = string_field(field.number, &map_namespace(value)?);
            }
        }
    }
    if let Some((key, value)) = label {
        // A label the client set under our key is replaced, not doubled.
        metadata.retain(|f| {
            !(f.number == 11
                && parse(&f.data).is_some_and(|entry| {
                    entry.iter().any(|e| e.number == 1 && text(e) == Some(key))
                }))
        });
        metadata.push(Field {
            number: 11,
            wire: 2,
            data: encode(&[string_field(1, key), string_field(2, value)]),
        });
    }
    Ok(encode(&metadata))
}

/// A namespace sent in protobuf (kubectl's typed `create namespace`,
/// client-go's typed `Update`), as JSON: a namespace is its name, labels,
/// annotations and resourceVersion to us (its spec and status are
/// kube-apiserver's).
pub fn namespace_as_json(body: &[u8]) -> Result<serde_json::Value, Status> {
    let envelope = body.strip_prefix(MAGIC).ok_or_else(malformed)?;
    let unknown = parse(envelope).ok_or_else(malformed)?;
    let raw = unknown
        .iter()
        .find(|f| f.number == 2)
        .ok_or_else(malformed)?;
    let object = parse(&raw.data).ok_or_else(malformed)?;
    let metadata = object
        .iter()
        .find(|f| f.number == 1)
        .ok_or_else(malformed)?;
    let mut out = serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"labels": {}, "annotations": {}}});
    for field in parse(&metadata.data).ok_or_else(malformed)? {
        let key = match field.number {
            1 => "name",
            6 => "resourceVersion",
            11 => "labels",
            12 => "annotations",
            _ => continue,
        };
        if field.number <= 6 {
            out["metadata"][key] = text(&field).ok_or_else(malformed)?.into();
            continue;
        }
        let entry = parse(&field.data).ok_or_else(malformed)?;
        let part = |n| {
            entry
                .iter()
                .find(|e| e.number == n)
                .and_then(text)
                .unwrap_or_default()
                .to_string()
        };
        out["metadata"][key][part(1)] = part(2).into();
    }
    Ok(out)
}

/// `Accept` for a list answered as object metadata only, in protobuf: the
/// cheapest answer kube-apiserver gives that still names every member.
pub const METADATA_LIST_ACCEPT: &str =
    "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";

/// A list's members as a `PartialObjectMetadataList` names them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MetadataList {
    pub resource_version: String,
    pub continue_token: String,
    pub remaining_item_count: Option<i64>,
    pub items: Vec<Member>,
}

/// One member: which object, at which version, and whether it carries
/// the tenant label.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Member {
    pub namespace: String,
    pub name: String,
    pub resource_version: String,
    pub tenant_labelled: bool,
}

/// Calls `each` with every field of a message (number, wire type, and the
/// varint's value or the payload), borrowing rather than copying: a list
/// of thousands of members is read in place. `None` when malformed.
fn walk<'a>(bytes: &'a [u8], mut each: impl FnMut(u64, u64, &'a [u8])) -> Option<()> {
    let mut at = 0;
    while at < bytes.len() {
        let key = read_varint(bytes, &mut at)?;
        let (number, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                let value = read_varint(bytes, &mut at)?;
                each(number, value, &[]);
            }
            2 => {
                let len = usize::try_from(read_varint(bytes, &mut at)?).ok()?;
                let payload = bytes.get(at..at.checked_add(len)?)?;
                at += len;
                each(number, 0, payload);
            }
            1 => at += 8,
            5 => at += 4,
            _ => return None,
        }
    }
    (at == bytes.len()).then_some(())
}

fn utf8(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes).ok().map(str::to_string)
}

/// Reads a protobuf `PartialObjectMetadataList` answer (ListMeta: 2
/// resourceVersion, 3 continue, 4 remainingItemCount; each item's
/// ObjectMeta: 1 name, 3 namespace, 6 resourceVersion).
pub fn metadata_list(body: &[u8]) -> Option<MetadataList> {
    let mut raw = None;
    walk(body.strip_prefix(MAGIC)?, |number, _, payload| {
        if number == 2 {
            raw = Some(payload);
        }
    })?;
    let mut list = MetadataList::default();
    let mut ok = true;
    walk(raw?, |number, _, payload| match number {
        1 => {
            ok &= walk(payload, |field, value, text| match field {
                2 => list.resource_version = utf8(text).unwrap_or_default(),
                3 => list.continue_token = utf8(text).unwrap_or_default(),
                4 => list.remaining_item_count = i64::try_from(value).ok(),
                _ => {}
            })
            .is_some();
        }
        2 => {
            let mut member = Member::default();
            let mut metadata_ok = true;
            let item_ok = walk(payload, |field, _, metadata| {
                if field != 1 {
                    return;
                }
                metadata_ok &= walk(metadata, |field, _, text| match field {
                    1 => member.name = utf8(text).unwrap_or_default(),
                    3 => member.namespace = utf8(text).unwrap_or_default(),
                    6 => member.resource_version = utf8(text).unwrap_or_default(),
                    11 => {
                        let _ = walk(text, |part, _, key| {
                            if part == 1 && key == TENANT_LABEL.as_bytes() {
                                member.tenant_labelled = true;
                            }
                        });
                    }
                    _ => {}
                })
                .is_some();
            })
            .is_some();
            ok &= item_ok && metadata_ok;
            list.items.push(member);
        }
        _ => {}
    })?;
    ok.then_some(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(fields: &[Field]) -> Vec<u8> {
        encode(fields)
    }

    fn object(kind: &str, metadata: Vec<Field>, rest: Vec<Field>) -> Vec<u8> {
        let mut top = vec![Field {
            number: 1,
            wire: 2,
            data: message(&metadata),
        }];
        top.extend(rest);
        let unknown = [
            Field {
                number: 1,
                wire: 2,
                data: message(&[string_field(1, "v1"), string_field(2, kind)]),
            },
            Field {
                number: 2,
                wire: 2,
                data: message(&top),
            },
            string_field(4, ""),
        ];
        let mut out = MAGIC.to_vec();
        out.extend(message(&unknown));
        out
    }

    fn map(ns: &str) -> Result<String, Status> {
        Ok(format!("acme--{ns}"))
    }

    fn metadata_of(body: &[u8]) -> Vec<Field> {
        let unknown = parse(&body[4..]).unwrap();
        let top = parse(&unknown.iter().find(|f| f.number == 2).unwrap().data).unwrap();
        parse(&top[0].data).unwrap()
    }

    #[test]
    fn a_configmap_lands_in_the_tenant_namespace_with_the_label() {
        let body = object(
            "ConfigMap",
            vec![string_field(1, "cfg"), string_field(3, "web")],
            vec![Field {
                number: 2,
                wire: 2,
                data: message(&[string_field(1, "a"), string_field(2, "b")]),
            }],
        );
        let out = rewrite(&body, &map, Some(("tenancy.arktos.io/tenant", "acme"))).unwrap();
        let metadata = metadata_of(&out);
        assert_eq!(text(&metadata[0]), Some("cfg"));
        assert_eq!(text(&metadata[1]), Some("acme--web"));
        let label = parse(&metadata[2].data).unwrap();
        assert_eq!(
            (text(&label[0]), text(&label[1])),
            (Some("tenancy.arktos.io/tenant"), Some("acme"))
        );
    }

    #[test]
    fn a_namespace_is_renamed_and_binding_subjects_mapped() {
        let out = rewrite(
            &object("Namespace", vec![string_field(1, "web")], vec![]),
            &map,
            None,
        )
        .unwrap();
        assert_eq!(text(&metadata_of(&out)[0]), Some("acme--web"));

        let subject = message(&[
            string_field(1, "ServiceAccount"),
            string_field(3, "ci"),
            string_field(4, "globex--web"),
        ]);
        let user = message(&[
            string_field(1, "User"),
            string_field(3, "bob"),
            string_field(4, ""),
        ]);
        let body = object(
            "RoleBinding",
            vec![string_field(1, "b"), string_field(3, "web")],
            vec![
                Field {
                    number: 2,
                    wire: 2,
                    data: subject,
                },
                Field {
                    number: 2,
                    wire: 2,
                    data: user,
                },
            ],
        );
        let out = rewrite(&body, &map, None).unwrap();
        let unknown = parse(&out[4..]).unwrap();
        let top = parse(&unknown[1].data).unwrap();
        let user = parse(&top[2].data).unwrap();
        assert_eq!(text(&user[2]), Some(""), "a user subject has no namespace");
        let subject = parse(&top[1].data).unwrap();
        assert_eq!(text(&subject[2]), Some("acme--globex--web"));
    }

    #[test]
    fn reads_a_namespace_as_json() {
        let label = Field {
            number: 11,
            wire: 2,
            data: message(&[string_field(1, "team"), string_field(2, "red")]),
        };
        let note = Field {
            number: 12,
            wire: 2,
            data: message(&[string_field(1, "note"), string_field(2, "hi")]),
        };
        let namespace = namespace_as_json(&object(
            "Namespace",
            vec![string_field(1, "web"), string_field(6, "42"), label, note],
            vec![],
        ))
        .unwrap();
        assert_eq!(namespace["metadata"]["name"], "web");
        assert_eq!(namespace["metadata"]["resourceVersion"], "42");
        assert_eq!(namespace["metadata"]["labels"]["team"], "red");
        assert_eq!(namespace["metadata"]["annotations"]["note"], "hi");
    }

    #[test]
    fn garbage_is_refused() {
        assert!(rewrite(b"not protobuf", &map, None).is_err());
        assert!(rewrite(b"k8s\0\xff\xff", &map, None).is_err());
    }

    #[test]
    fn reads_the_members_of_a_metadata_list() {
        let member = |namespace: &str, name: &str, version: &str, label: &str| Field {
            number: 2,
            wire: 2,
            data: message(&[Field {
                number: 1,
                wire: 2,
                data: message(&[
                    string_field(1, name),
                    string_field(3, namespace),
                    string_field(5, "uid"),
                    string_field(6, version),
                    Field {
                        number: 11,
                        wire: 2,
                        data: message(&[string_field(1, label), string_field(2, "v")]),
                    },
                ]),
            }]),
        };
        let list_meta = Field {
            number: 1,
            wire: 2,
            data: message(&[
                string_field(2, "42"),
                string_field(3, "token"),
                Field {
                    number: 4,
                    wire: 0,
                    data: vec![7],
                },
            ]),
        };
        let list = message(&[
            list_meta,
            member("acme--web", "a", "40", TENANT_LABEL),
            member("acme--db", "b", "41", "app"),
        ]);
        let mut body = MAGIC.to_vec();
        body.extend(message(&[
            string_field(1, ""),
            Field {
                number: 2,
                wire: 2,
                data: list,
            },
        ]));
        let read = metadata_list(&body).unwrap();
        assert_eq!(read.resource_version, "42");
        assert_eq!(read.continue_token, "token");
        assert_eq!(read.remaining_item_count, Some(7));
        assert_eq!(
            read.items,
            [
                Member {
                    namespace: "acme--web".into(),
                    name: "a".into(),
                    resource_version: "40".into(),
                    tenant_labelled: true,
                },
                Member {
                    namespace: "acme--db".into(),
                    name: "b".into(),
                    resource_version: "41".into(),
                    tenant_labelled: false,
                }
            ]
        );
        assert!(metadata_list(&body[..body.len() - 3]).is_none());
        assert!(metadata_list(b"{}").is_none());
    }
}
