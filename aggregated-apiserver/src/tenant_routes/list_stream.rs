//! Tenant-wide lists rewritten as they stream from kube-apiserver, item by
//! item, so the client receives the first items while kube-apiserver still
//! writes the last: the gateway adds little more than one item's time.
//!
//! kube-apiserver writes a list as `{"kind":..,"apiVersion":..,"metadata":
//! {..},"items":[{"metadata":{..},..},..]}` with metadata first in every
//! item; names cannot hold quotes, so an item's first `"namespace":"` is its
//! own namespace. Items of other namespaces are dropped (they cannot be the
//! tenant's). Any other shape (custom resources list `apiVersion` first) is
//! reported before a byte is written, and the caller rewrites the parsed
//! answer instead.

use std::sync::Arc;

use arktos_crds::vm::annotations::SHAPE;
use serde_json::Value;
use serde_json::value::RawValue;

use super::mapping::View;

const ITEMS: &[u8] = b"\"items\":[";
const ITEM_START: &str = "{\"metadata\":{";
const NAMESPACE: &str = "\"namespace\":\"";

/// What [`ListStream::push`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Bytes for the client (possibly none yet).
    Emit(Vec<u8>),
    /// The answer is not shaped as expected: rewrite it parsed. Nothing has
    /// been emitted; [`ListStream::into_buffered`] gives back every byte.
    Unexpected,
}

enum Stage {
    /// Before `"items":[`.
    Head,
    /// Between items, or inside one (`start` set).
    Items,
    /// After the items' closing `]`.
    Tail,
}

/// How to rewrite a list answer: the tenant's view, and the kind of its
/// items when they may be VM pods (or workloads) to show in the Arktos shape.
#[derive(Clone)]
pub struct ListRewrite {
    pub view: Arc<View>,
    pub vm_kind: Option<String>,
}

pub struct ListStream {
    rewrite: ListRewrite,
    buffer: Vec<u8>,
    /// Scanned up to here.
    at: usize,
    stage: Stage,
    /// Start of the item being scanned, its brace depth, and string state.
    start: Option<usize>,
    depth: u32,
    in_string: bool,
    escaped: bool,
    emitted_items: usize,
    /// The rewritten head, held until the first item shows the shape.
    head: Option<Vec<u8>>,
    /// The first item (or the end of an empty list) had the expected
    /// shape: bytes flow to the client from then on, no fallback after.
    started: bool,
}

impl ListStream {
    pub fn new(rewrite: ListRewrite) -> Self {
        Self {
            rewrite,
            buffer: Vec::new(),
            at: 0,
            stage: Stage::Head,
            start: None,
            depth: 0,
            in_string: false,
            escaped: false,
            emitted_items: 0,
            head: None,
            started: false,
        }
    }

    /// Whether bytes flow to the client (no fallback any more).
    pub fn started(&self) -> bool {
        self.started
    }

    /// Every byte received, for the fallback.
    pub fn into_buffered(self) -> Vec<u8> {
        self.buffer
    }

    pub fn push(&mut self, chunk: &[u8]) -> Progress {
        self.buffer.extend_from_slice(chunk);
        let mut out = Vec::new();
        if let Stage::Head = self.stage {
            match self.find_head() {
                Some(true) => {}
                Some(false) => return Progress::Emit(out),
                None => return Progress::Unexpected,
            }
        }
        if let Stage::Items = self.stage {
            if self.scan_items(&mut out).is_none() {
                return Progress::Unexpected;
            }
            self.drop_consumed();
        }
        Progress::Emit(out)
    }

    /// Looks for the end of the head (all before the first item): `false`
    /// while it has not all arrived, `None` for a list not of the expected
    /// shape.
    fn find_head(&mut self) -> Option<bool> {
        if self.rewrite.view.storage_prefix().is_empty() {
            return None;
        }
        let Some(found) = memchr::memmem::find(&self.buffer, ITEMS) else {
            return Some(false);
        };
        self.head = Some(self.head(found)?);
        self.at = found + ITEMS.len();
        self.stage = Stage::Items;
        Some(true)
    }

    /// Reads items as far as the buffer goes, rewriting each complete one
    /// into `out`; `None` when the first item is not of the expected shape.
    fn scan_items(&mut self, out: &mut Vec<u8>) -> Option<()> {
        // memchr jumps to the next byte that matters; brackets inside an
        // item need no counting, its braces alone say where it ends.
        while self.at < self.buffer.len() {
            let rest = &self.buffer[self.at..];
            let Some(start) = self.start else {
                let Some(i) = memchr::memchr2(b'{', b']', rest) else {
                    self.at = self.buffer.len();
                    break;
                };
                let byte = rest[i];
                self.at += i + 1;
                if byte == b'{' {
                    self.start = Some(self.at - 1);
                    self.depth = 1;
                    continue;
                }
                self.begin(out);
                self.stage = Stage::Tail;
                break;
            };
            if self.escaped {
                self.escaped = false;
                self.at += 1;
                continue;
            }
            if self.in_string {
                let Some(i) = memchr::memchr2(b'"', b'\\', rest) else {
                    self.at = self.buffer.len();
                    break;
                };
                self.escaped = rest[i] == b'\\';
                self.in_string = self.escaped;
                self.at += i + 1;
                continue;
            }
            let Some(i) = memchr::memchr3(b'"', b'{', b'}', rest) else {
                self.at = self.buffer.len();
                break;
            };
            let byte = rest[i];
            self.at += i + 1;
            match byte {
                b'"' => self.in_string = true,
                b'{' => self.depth += 1,
                _ => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        self.start = None;
                        self.end_item(start, out)?;
                    }
                }
            }
        }
        Some(())
    }

    /// The item from `start` to here is complete: rewritten into `out`.
    fn end_item(&mut self, start: usize, out: &mut Vec<u8>) -> Option<()> {
        let item = self.item(&self.buffer[start..self.at]);
        if item.is_some() {
            self.begin(out);
        }
        match item {
            None if !self.started => return None,
            // Mid-stream a strange item is dropped rather than leaked.
            None | Some(None) => {}
            Some(Some(rewritten)) => {
                if self.emitted_items > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&rewritten);
                self.emitted_items += 1;
            }
        }
        Some(())
    }

    /// Keeps only what the item under way still needs.
    fn drop_consumed(&mut self) {
        let keep_from = self.start.unwrap_or(self.at);
        if keep_from > 0 && self.started {
            self.buffer.drain(..keep_from);
            self.at -= keep_from;
            if let Some(start) = self.start.as_mut() {
                *start -= keep_from;
            }
        }
    }

    /// The shape is known good: the held head goes out first.
    fn begin(&mut self, out: &mut Vec<u8>) {
        if let Some(head) = self.head.take() {
            out.splice(0..0, head);
        }
        self.started = true;
    }

    /// The bytes that close the list; `None` if the answer ended early.
    pub fn finish(self) -> Option<Vec<u8>> {
        matches!(self.stage, Stage::Tail).then(|| b"]}".to_vec())
    }

    /// `{"kind":..,"apiVersion":..,"metadata":{..},"items":[` with the
    /// `continue` token in the tenant's terms.
    fn head(&self, items_at: usize) -> Option<Vec<u8>> {
        let mut text = self.buffer[..items_at].to_vec();
        // `{...,` up to the items: close it to read it.
        if text.last() == Some(&b',') {
            text.pop();
        }
        text.push(b'}');
        let envelope: std::collections::BTreeMap<&str, &RawValue> =
            serde_json::from_slice(&text).ok()?;
        let mut metadata: Value = serde_json::from_str(envelope.get("metadata")?.get()).ok()?;
        if let Some(token) = metadata.get("continue").and_then(Value::as_str) {
            metadata["continue"] = self.rewrite.view.continue_to_tenant(token).into();
        }
        let mut out = Vec::with_capacity(items_at + 16);
        out.push(b'{');
        for key in ["kind", "apiVersion"] {
            if let Some(value) = envelope.get(key) {
                out.extend_from_slice(format!("\"{key}\":{},", value.get()).as_bytes());
            }
        }
        out.extend_from_slice(b"\"metadata\":");
        out.extend_from_slice(&serde_json::to_vec(&metadata).ok()?);
        out.extend_from_slice(b",\"items\":[");
        Some(out)
    }

    fn item(&self, item: &[u8]) -> Option<Option<Vec<u8>>> {
        tenant_item(&self.rewrite, item)
    }
}

/// One list item (`{"metadata":{..` first) in the tenant's terms: `None`
/// when not shaped as expected, `Some(None)` when it is another tenant's,
/// else the item with its namespace mapped (and a VM pod in the Arktos
/// shape).
pub fn tenant_item(rewrite: &ListRewrite, item: &[u8]) -> Option<Option<Vec<u8>>> {
    let text = std::str::from_utf8(item).ok()?;
    if !text.starts_with(ITEM_START) {
        return None;
    }
    let at = text.find(NAMESPACE)?;
    let prefix = rewrite.view.storage_prefix();
    if !text[at + NAMESPACE.len()..].starts_with(prefix) {
        return Some(None);
    }
    let names_others = NAMES_OTHERS
        .iter()
        .any(|key| memchr::memmem::find(item, key.as_bytes()).is_some());
    let vm = rewrite
        .vm_kind
        .as_ref()
        .filter(|_| memchr::memmem::find(item, SHAPE.as_bytes()).is_some());
    if !names_others && vm.is_none() {
        let mut out = Vec::with_capacity(item.len());
        out.extend_from_slice(&item[..at + NAMESPACE.len()]);
        out.extend_from_slice(&item[at + NAMESPACE.len() + prefix.len()..]);
        return Some(Some(out));
    }
    let mut value: Value = serde_json::from_slice(item).ok()?;
    if !rewrite.view.response(&mut value) {
        return Some(None);
    }
    if let Some(kind) = vm {
        // A VM pod (or template): shown in the Arktos shape.
        value["kind"] = kind.as_str().into();
        arktos_crds::vm::shape::to_arktos(&mut value);
        value.as_object_mut()?.remove("kind");
    }
    Some(Some(serde_json::to_vec(&value).ok()?))
}

/// Fields whose values name namespaces or cluster objects beyond the
/// object's own namespace (subjects, event references, namespace
/// selectors, role references): an item holding any of them is rewritten
/// whole (`View::response`), not as raw text.
const NAMES_OTHERS: &[&str] = &[
    "\"subjects\"",
    "\"involvedObject\"",
    "\"regarding\"",
    "\"related\"",
    "\"namespaceSelector\"",
    "\"roleRef\"",
];

/// One object as kube-apiserver answers a GET (`{"kind":..,"apiVersion":..,
/// "metadata":{..`) in the tenant's terms, rewritten as a list item is;
/// `None` when not shaped for that or not the tenant's.
pub fn tenant_object(rewrite: &ListRewrite, object: &[u8]) -> Option<Vec<u8>> {
    let at = memchr::memmem::find(object, b"\"metadata\":{")?;
    if at < 2 || object[1..at].contains(&b'{') {
        return None;
    }
    let mut item = Vec::with_capacity(object.len() - at + 1);
    item.push(b'{');
    item.extend_from_slice(&object[at..]);
    let rewritten = tenant_item(rewrite, &item)??;
    let mut out = Vec::with_capacity(object.len());
    out.extend_from_slice(&object[..at]);
    out.extend_from_slice(&rewritten[1..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use arktos_crds::naming::TenantName;

    use super::*;

    /// The whole answer in one chunk.
    fn rewrite_list(rewrite: ListRewrite, body: &[u8]) -> Option<Vec<u8>> {
        let mut stream = ListStream::new(rewrite);
        let Progress::Emit(mut out) = stream.push(body) else {
            return None;
        };
        out.extend_from_slice(&stream.finish()?);
        Some(out)
    }

    fn view() -> ListRewrite {
        ListRewrite {
            view: Arc::new(View::new(TenantName::new("acme").unwrap())),
            vm_kind: Some("Pod".into()),
        }
    }

    const LIST: &str = r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"9","continue":"x"},"items":[{"metadata":{"name":"a","namespace":"acme--web","annotations":{"q":"}\"{["}},"spec":{}},{"metadata":{"name":"b","namespace":"globex--web"}},{"metadata":{"name":"c","namespace":"acme--db"}}]}"#;

    #[test]
    fn items_are_rewritten_whatever_the_chunking() {
        let view = view();
        let whole = rewrite_list(view.clone(), LIST.as_bytes()).unwrap();
        let parsed: Value = serde_json::from_slice(&whole).unwrap();
        let names: Vec<&str> = parsed["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["namespace"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["web", "db"]);
        assert_eq!(parsed["items"][0]["metadata"]["annotations"]["q"], "}\"{[");
        for size in [1, 2, 3, 7, 50] {
            let mut stream = ListStream::new(view.clone());
            let mut out = Vec::new();
            for chunk in LIST.as_bytes().chunks(size) {
                match stream.push(chunk) {
                    Progress::Emit(bytes) => out.extend_from_slice(&bytes),
                    Progress::Unexpected => panic!("chunks of {size}"),
                }
            }
            out.extend_from_slice(&stream.finish().unwrap());
            assert_eq!(out, whole, "chunks of {size}");
        }
    }

    #[test]
    fn the_streamed_rewrite_agrees_with_the_full_one() {
        let list = r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"7"},"items":[{"metadata":{"name":"a","namespace":"acme--web","labels":{"tenancy.arktos.io/tenant":"acme"}},"spec":{"containers":[{"name":"c","env":[{"name":"namespace","value":"acme--x"}]}]}},{"metadata":{"name":"b","namespace":"globex--web"}}]}"#;
        let fast: Value =
            serde_json::from_slice(&rewrite_list(view(), list.as_bytes()).unwrap()).unwrap();
        let mut full: Value = serde_json::from_str(list).unwrap();
        view().view.response(&mut full);
        assert_eq!(fast, full);
        assert_eq!(
            fast["items"][0]["spec"]["containers"][0]["env"][0]["value"], "acme--x",
            "user data untouched"
        );
        assert!(rewrite_list(view(), b"not json").is_none());
    }

    #[test]
    fn one_object_is_rewritten_as_a_list_item_is() {
        let pod = r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"a","namespace":"acme--web","labels":{"tenancy.arktos.io/tenant":"acme"}},"spec":{"containers":[{"name":"c","env":[{"name":"namespace","value":"acme--x"}]}]}}"#;
        let fast: Value =
            serde_json::from_slice(&tenant_object(&view(), pod.as_bytes()).unwrap()).unwrap();
        let mut full: Value = serde_json::from_str(pod).unwrap();
        view().view.response(&mut full);
        assert_eq!(fast, full);
        assert_eq!(fast["kind"], "Pod");
        let vm = r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"vm1","namespace":"acme--web","annotations":{"vm.arktos.io/shape":"virtualMachine"}},"spec":{"runtimeClassName":"arktos-vm","containers":[{"name":"vm","image":"img"}]}}"#;
        let shaped: Value =
            serde_json::from_slice(&tenant_object(&view(), vm.as_bytes()).unwrap()).unwrap();
        assert_eq!(shaped["kind"], "Pod");
        assert_eq!(shaped["spec"]["virtualMachine"]["image"], "img");
        assert_eq!(shaped["metadata"]["namespace"], "web");
        let other =
            r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"a","namespace":"globex--web"}}"#;
        assert!(tenant_object(&view(), other.as_bytes()).is_none());
        assert!(tenant_object(&view(), br#"{"items":[{"metadata":{}}]}"#).is_none());
        let policy = r#"{"kind":"NetworkPolicy","apiVersion":"networking.k8s.io/v1","metadata":{"name":"p","namespace":"acme--web"},"spec":{"ingress":[{"from":[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"acme--db"}}}]}]}}"#;
        let mapped: Value =
            serde_json::from_slice(&tenant_object(&view(), policy.as_bytes()).unwrap()).unwrap();
        let mut full: Value = serde_json::from_str(policy).unwrap();
        view().view.response(&mut full);
        assert_eq!(
            mapped, full,
            "namespace selectors are mapped as the whole rewrite maps them"
        );
        assert_eq!(
            mapped["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "db"
        );
    }

    #[test]
    fn vm_pods_in_a_list_are_shown_in_the_arktos_shape() {
        let list = r#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[{"metadata":{"name":"vm1","namespace":"acme--web","annotations":{"vm.arktos.io/shape":"virtualMachine"}},"spec":{"runtimeClassName":"arktos-vm","containers":[{"name":"vm","image":"img"}]}}]}"#;
        let out = rewrite_list(view(), list.as_bytes()).unwrap();
        let parsed: Value = serde_json::from_slice(&out).unwrap();
        let item = &parsed["items"][0];
        assert_eq!(item["spec"]["virtualMachine"]["image"], "img");
        assert_eq!(item["metadata"]["namespace"], "web");
        assert!(item.get("kind").is_none());
    }

    #[test]
    fn other_shapes_fall_back_before_anything_is_sent() {
        let view = view();
        let custom = r#"{"apiVersion":"x/v1","items":[{"apiVersion":"x/v1","kind":"X","metadata":{"namespace":"acme--web"}}],"kind":"XList","metadata":{}}"#;
        let mut stream = ListStream::new(view.clone());
        assert_eq!(stream.push(custom.as_bytes()), Progress::Unexpected);
        assert_eq!(stream.into_buffered(), custom.as_bytes());
        assert!(rewrite_list(view, b"{\"kind\":\"PodList\",\"items\":[").is_none());
    }
}
