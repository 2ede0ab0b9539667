//! Kubernetes protobuf request bodies (kubectl's typed commands send them)
//! rewritten into the tenant's storage terms without knowing the concrete
//! type: every top-level object keeps its ObjectMeta in field 1, whose
//! namespace is field 3, name field 1 and labels field 11; RBAC bindings
//! keep their subjects in field 2 with the namespace in field 4.
//!
//! Layout: the magic `k8s\0`, then a `runtime.Unknown` message: field 1
//! TypeMeta (1 apiVersion, 2 kind), field 2 the object's own bytes.

use arktos_crds::naming::TENANT_LABEL;
use arktos_crds::sharding::BUCKET_LABEL;
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

/// How a tenant's names become storage names.
pub trait ToStorage {
    fn namespace(&self, name: &str) -> Result<String, Status>;
    /// A ClusterRole a binding names.
    fn cluster_role(&self, name: &str) -> Result<String, Status>;
}

/// Rewrites a protobuf request body into storage terms (`names`); `labels`
/// are stamped on the object.
pub fn rewrite(
    body: &[u8],
    names: &dyn ToStorage,
    labels: &[(&str, String)],
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
                field.data = rewrite_metadata(&field.data, &kind, names, labels)?
            }
            2 if field.wire == 2 && kind.ends_with("RoleBinding") => {
                let mut subject = parse(&field.data).ok_or_else(malformed)?;
                // Protobuf writes empty strings too: a User or Group
                // subject has an empty namespace, which stays empty.
                for part in subject.iter_mut().filter(|f| f.number == 4) {
                    let namespace = text(part).ok_or_else(malformed)?;
                    if !namespace.is_empty() {
                        let mapped = names.namespace(namespace)?;
                        *part = string_field(4, &mapped);
                    }
                }
                field.data = encode(&subject);
            }
            // roleRef: 2 kind, 3 name.
            3 if field.wire == 2 && kind.ends_with("RoleBinding") => {
                let mut role = parse(&field.data).ok_or_else(malformed)?;
                let cluster_role = role
                    .iter()
                    .any(|f| f.number == 2 && text(f) == Some("ClusterRole"));
                for part in role.iter_mut().filter(|f| f.number == 3 && cluster_role) {
                    let name = text(part).ok_or_else(malformed)?;
                    *part = string_field(3, &names.cluster_role(name)?);
                }
                field.data = encode(&role);
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
    names: &dyn ToStorage,
    labels: &[(&str, String)],
) -> Result<Vec<u8>, Status> {
    let mut metadata = parse(bytes).ok_or_else(malformed)?;
    for field in metadata.iter_mut() {
        let remap = field.number == 3 || (kind == "Namespace" && field.number == 1);
        if remap && field.wire == 2 {
            let value = text(field).ok_or_else(malformed)?;
            if !value.is_empty() {
                *field = string_field(field.number, &names.namespace(value)?);
            }
        }
    }
    for (key, value) in labels {
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

/// A self review (SelfSubjectAccessReview, SelfSubjectRulesReview,
/// SelfSubjectReview) sent in protobuf, as JSON: its kind and what its
/// spec asks (resourceAttributes: 1 namespace, 2 verb, 3 group, 4
/// version, 5 resource, 6 subresource, 7 name; nonResourceAttributes: 1
/// path, 2 verb; a rules review's spec: 1 namespace). Selectors of the
/// question are not read.
pub fn self_review_as_json(body: &[u8]) -> Result<serde_json::Value, Status> {
    let envelope = body.strip_prefix(MAGIC).ok_or_else(malformed)?;
    let unknown = parse(envelope).ok_or_else(malformed)?;
    let part = |fields: &[Field], n: u64| fields.iter().find(|f| f.number == n).cloned();
    let type_meta = part(&unknown, 1).ok_or_else(malformed)?;
    let type_meta = parse(&type_meta.data).ok_or_else(malformed)?;
    let text_of = |field: Option<Field>| {
        field
            .as_ref()
            .and_then(text)
            .unwrap_or_default()
            .to_string()
    };
    let (api_version, kind) = (text_of(part(&type_meta, 1)), text_of(part(&type_meta, 2)));
    let raw = part(&unknown, 2).ok_or_else(malformed)?;
    let object = parse(&raw.data).ok_or_else(malformed)?;
    let spec = match part(&object, 2) {
        Some(spec) => parse(&spec.data).ok_or_else(malformed)?,
        None => Vec::new(),
    };
    let strings = |bytes: &[u8], names: &[&str]| -> Result<serde_json::Value, Status> {
        let mut out = serde_json::Map::new();
        for field in parse(bytes).ok_or_else(malformed)? {
            let Some(name) = usize::try_from(field.number - 1)
                .ok()
                .and_then(|i| names.get(i))
            else {
                continue;
            };
            if field.wire == 2 && !name.is_empty() {
                out.insert(name.to_string(), text(&field).ok_or_else(malformed)?.into());
            }
        }
        Ok(serde_json::Value::Object(out))
    };
    let mut out = serde_json::json!({"apiVersion": api_version, "kind": kind, "spec": {}});
    match kind.as_str() {
        "SelfSubjectAccessReview" => {
            const RESOURCE: &[&str] = &[
                "namespace",
                "verb",
                "group",
                "version",
                "resource",
                "subresource",
                "name",
            ];
            if let Some(attributes) = part(&spec, 1) {
                out["spec"]["resourceAttributes"] = strings(&attributes.data, RESOURCE)?;
            }
            if let Some(attributes) = part(&spec, 2) {
                out["spec"]["nonResourceAttributes"] =
                    strings(&attributes.data, &["path", "verb"])?;
            }
        }
        "SelfSubjectRulesReview" => {
            let mut whole = Vec::new();
            for field in &spec {
                whole.extend(encode(std::slice::from_ref(field)));
            }
            out["spec"] = strings(&whole, &["namespace"])?;
        }
        _ => {}
    }
    Ok(out)
}

/// How a protobuf field reads as JSON.
#[derive(Clone, Copy)]
enum Shape {
    Text,
    Texts,
    /// `map<string, string>`: repeated entries of key 1 and value 2.
    Map,
    Message(&'static [(u64, &'static str, Shape)]),
    Messages(&'static [(u64, &'static str, Shape)]),
}

const OBJECT_META: &[(u64, &str, Shape)] = &[
    (1, "name", Shape::Text),
    (2, "generateName", Shape::Text),
    (6, "resourceVersion", Shape::Text),
    (11, "labels", Shape::Map),
    (12, "annotations", Shape::Map),
];
const LABEL_SELECTOR: &[(u64, &str, Shape)] = &[
    (1, "matchLabels", Shape::Map),
    (
        2,
        "matchExpressions",
        Shape::Messages(&[
            (1, "key", Shape::Text),
            (2, "operator", Shape::Text),
            (3, "values", Shape::Texts),
        ]),
    ),
];
const CLUSTER_ROLE: &[(u64, &str, Shape)] = &[
    (1, "metadata", Shape::Message(OBJECT_META)),
    (
        2,
        "rules",
        Shape::Messages(&[
            (1, "verbs", Shape::Texts),
            (2, "apiGroups", Shape::Texts),
            (3, "resources", Shape::Texts),
            (4, "resourceNames", Shape::Texts),
            (5, "nonResourceURLs", Shape::Texts),
        ]),
    ),
    (
        3,
        "aggregationRule",
        Shape::Message(&[(1, "clusterRoleSelectors", Shape::Messages(LABEL_SELECTOR))]),
    ),
];
const CLUSTER_ROLE_BINDING: &[(u64, &str, Shape)] = &[
    (1, "metadata", Shape::Message(OBJECT_META)),
    (
        2,
        "subjects",
        Shape::Messages(&[
            (1, "kind", Shape::Text),
            (2, "apiGroup", Shape::Text),
            (3, "name", Shape::Text),
            (4, "namespace", Shape::Text),
        ]),
    ),
    (
        3,
        "roleRef",
        Shape::Message(&[
            (1, "apiGroup", Shape::Text),
            (2, "kind", Shape::Text),
            (3, "name", Shape::Text),
        ]),
    ),
];

fn message_as_json(
    bytes: &[u8],
    schema: &[(u64, &str, Shape)],
) -> Result<serde_json::Value, Status> {
    let mut out = serde_json::Map::new();
    for field in parse(bytes).ok_or_else(malformed)? {
        let Some((_, name, shape)) = schema.iter().find(|(n, _, _)| *n == field.number) else {
            continue;
        };
        let name = name.to_string();
        match shape {
            // Protobuf writes empty strings too; JSON leaves them out.
            Shape::Text => {
                let value = text(&field).ok_or_else(malformed)?;
                if !value.is_empty() {
                    out.insert(name, value.into());
                }
            }
            Shape::Texts => push(&mut out, name, text(&field).ok_or_else(malformed)?.into()),
            Shape::Map => {
                let entry = parse(&field.data).ok_or_else(malformed)?;
                let part = |n| entry.iter().find(|e| e.number == n).and_then(text);
                let map = out.entry(name).or_insert_with(|| serde_json::json!({}));
                map[part(1).unwrap_or_default()] = part(2).unwrap_or_default().into();
            }
            Shape::Message(inner) => {
                out.insert(name, message_as_json(&field.data, inner)?);
            }
            Shape::Messages(inner) => push(&mut out, name, message_as_json(&field.data, inner)?),
        }
    }
    Ok(serde_json::Value::Object(out))
}

fn push(
    out: &mut serde_json::Map<String, serde_json::Value>,
    name: String,
    item: serde_json::Value,
) {
    let list = out.entry(name).or_insert_with(|| serde_json::json!([]));
    if let Some(list) = list.as_array_mut() {
        list.push(item);
    }
}

/// A ClusterRole or ClusterRoleBinding sent in protobuf (kubectl's typed
/// `create clusterrole`), as JSON: everything a tenant writes of one.
pub fn cluster_rbac_as_json(body: &[u8]) -> Result<serde_json::Value, Status> {
    let envelope = body.strip_prefix(MAGIC).ok_or_else(malformed)?;
    let unknown = parse(envelope).ok_or_else(malformed)?;
    let part = |n: u64| unknown.iter().find(|f| f.number == n);
    let type_meta = parse(&part(1).ok_or_else(malformed)?.data).ok_or_else(malformed)?;
    let kind = type_meta
        .iter()
        .find(|f| f.number == 2)
        .and_then(text)
        .unwrap_or_default()
        .to_string();
    let schema = match kind.as_str() {
        "ClusterRole" => CLUSTER_ROLE,
        "ClusterRoleBinding" => CLUSTER_ROLE_BINDING,
        other => {
            return Err(status::bad_request(&format!(
                "expected a ClusterRole or ClusterRoleBinding, got {other:?}"
            )));
        }
    };
    let mut object = message_as_json(&part(2).ok_or_else(malformed)?.data, schema)?;
    object["apiVersion"] = "rbac.authorization.k8s.io/v1".into();
    object["kind"] = kind.into();
    Ok(object)
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
/// the tenant label and the tenant's bucket label.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Member {
    pub namespace: String,
    pub name: String,
    pub resource_version: String,
    pub tenant_labelled: bool,
    pub bucket_labelled: bool,
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
                            if part == 1 && key == BUCKET_LABEL.as_bytes() {
                                member.bucket_labelled = true;
                            }
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

    struct Acme;

    impl ToStorage for Acme {
        fn namespace(&self, name: &str) -> Result<String, Status> {
            Ok(format!("acme--{name}"))
        }
        fn cluster_role(&self, name: &str) -> Result<String, Status> {
            Ok(if name == "view" {
                name.into()
            } else {
                format!("acme--{name}")
            })
        }
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
        let out = rewrite(
            &body,
            &Acme,
            &[("tenancy.arktos.io/tenant", "acme".to_string())],
        )
        .unwrap();
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
            &Acme,
            &[],
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
        let out = rewrite(&body, &Acme, &[]).unwrap();
        let unknown = parse(&out[4..]).unwrap();
        let top = parse(&unknown[1].data).unwrap();
        let user = parse(&top[2].data).unwrap();
        assert_eq!(text(&user[2]), Some(""), "a user subject has no namespace");
        let subject = parse(&top[1].data).unwrap();
        assert_eq!(text(&subject[2]), Some("acme--globex--web"));
    }

    #[test]
    fn a_binding_names_the_tenants_cluster_role_as_stored() {
        for (named, stored) in [("reader", "acme--reader"), ("view", "view")] {
            let role_ref = Field {
                number: 3,
                wire: 2,
                data: message(&[
                    string_field(1, "rbac.authorization.k8s.io"),
                    string_field(2, "ClusterRole"),
                    string_field(3, named),
                ]),
            };
            let body = object("RoleBinding", vec![string_field(1, "b")], vec![role_ref]);
            let out = rewrite(&body, &Acme, &[]).unwrap();
            let unknown = parse(&out[4..]).unwrap();
            let top = parse(&unknown[1].data).unwrap();
            let role = parse(&top[1].data).unwrap();
            assert_eq!(text(&role[2]), Some(stored));
        }
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
        assert!(rewrite(b"not protobuf", &Acme, &[]).is_err());
        assert!(rewrite(b"k8s\0\xff\xff", &Acme, &[]).is_err());
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
                    bucket_labelled: false,
                },
                Member {
                    namespace: "acme--db".into(),
                    name: "b".into(),
                    resource_version: "41".into(),
                    tenant_labelled: false,
                    bucket_labelled: false,
                }
            ]
        );
        assert!(metadata_list(&body[..body.len() - 3]).is_none());
        assert!(metadata_list(b"{}").is_none());
    }

    #[test]
    fn a_self_review_in_protobuf_reads_as_its_question() {
        let nested = |number, fields: &[Field]| Field {
            number,
            wire: 2,
            data: message(fields),
        };
        let attributes = nested(
            1,
            &[
                string_field(1, "web"),
                string_field(2, "create"),
                string_field(5, "pods"),
                nested(9, &[string_field(1, "app=x")]),
            ],
        );
        let access = object(
            "SelfSubjectAccessReview",
            vec![],
            vec![nested(2, &[attributes])],
        );
        let review = self_review_as_json(&access).unwrap();
        assert_eq!(review["kind"], "SelfSubjectAccessReview");
        assert_eq!(
            review["spec"]["resourceAttributes"],
            serde_json::json!({"namespace": "web", "verb": "create", "resource": "pods"})
        );
        let rules = object(
            "SelfSubjectRulesReview",
            vec![],
            vec![nested(2, &[string_field(1, "web")])],
        );
        assert_eq!(
            self_review_as_json(&rules).unwrap()["spec"],
            serde_json::json!({"namespace": "web"})
        );
        assert!(self_review_as_json(b"k8s\0\x0a\xff").is_err());
    }

    #[test]
    fn a_cluster_role_in_protobuf_reads_as_json() {
        let nested = |number, fields: &[Field]| Field {
            number,
            wire: 2,
            data: message(fields),
        };
        let label = |k: &str, v: &str| nested(11, &[string_field(1, k), string_field(2, v)]);
        let rule = nested(
            2,
            &[
                string_field(1, "get"),
                string_field(1, "list"),
                string_field(2, ""),
                string_field(3, "pods"),
            ],
        );
        let body = object(
            "ClusterRole",
            vec![string_field(1, "reader"), label("team", "a")],
            vec![rule],
        );
        assert_eq!(
            cluster_rbac_as_json(&body).unwrap(),
            serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "reader", "labels": {"team": "a"}},
                "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]})
        );
        let binding = object(
            "ClusterRoleBinding",
            vec![string_field(1, "readers")],
            vec![
                nested(2, &[string_field(1, "User"), string_field(3, "ann")]),
                nested(
                    3,
                    &[string_field(2, "ClusterRole"), string_field(3, "reader")],
                ),
            ],
        );
        let binding = cluster_rbac_as_json(&binding).unwrap();
        assert_eq!(binding["subjects"][0]["name"], "ann");
        assert_eq!(binding["roleRef"]["name"], "reader");
        let other = object("Pod", vec![], vec![]);
        assert!(cluster_rbac_as_json(&other).is_err());
    }
}
