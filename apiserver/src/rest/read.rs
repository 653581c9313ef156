//! get and list: reads at the latest revision go to the store (consistent, as upstream's quorum
//! reads), reads at resourceVersion=0 are served from the watch cache; lists page with
//! limit/continue and filter by label and field selectors.

use std::sync::Arc;

use serde_json::Value;

use super::{parse_rv, store_error};
use crate::api::Api;
use crate::cache::{decode_kv, CachedObject};
use crate::encoded::Encoded;
use crate::meta;
use crate::resources::Resource;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;

/// The query of a list (and of a watch).
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub label_selector: LabelSelector,
    pub field_selector: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
}

/// The list metadata of a list answer.
#[derive(Debug, Clone, Default)]
pub struct ListMeta {
    pub resource_version: i64,
    pub continue_token: Option<String>,
    pub remaining: Option<u64>,
}

impl ListOptions {
    /// Parses the selectors of a query, checking the fields against the kind's.
    pub fn new(res: &Resource, label_selector: Option<&str>, field_selector: Option<&str>) -> Result<Self, ApiError> {
        let label_selector = LabelSelector::parse(label_selector.unwrap_or("")).map_err(ApiError::bad_request)?;
        let field_selector = FieldSelector::parse(field_selector.unwrap_or("")).map_err(ApiError::bad_request)?;
        let known = res.strategy.field_names();
        for r in &field_selector.requirements {
            if r.field != "metadata.name" && r.field != "metadata.namespace" && !known.contains(&r.field.as_str()) {
                return Err(ApiError::bad_request(format!("field label not supported: {}", r.field)));
            }
        }
        Ok(ListOptions { label_selector, field_selector, ..Default::default() })
    }

    /// Whether every object is selected.
    pub fn selects_everything(&self) -> bool {
        self.label_selector.is_empty() && self.field_selector.is_empty()
    }

    /// Whether a cached object is selected.
    pub fn matches_cached(&self, res: &Resource, obj: &CachedObject) -> bool {
        if self.selects_everything() {
            return true;
        }
        let Some(s) = obj.selectable(res) else { return false };
        (self.label_selector.is_empty() || self.label_selector.matches(&s.labels))
            && (self.field_selector.is_empty() || self.field_selector.matches(|f| s.field(f)))
    }

    /// Whether `obj` is selected.
    pub fn matches(&self, res: &Resource, obj: &Value) -> bool {
        if !self.label_selector.is_empty() {
            let labels = obj.pointer("/metadata/labels").and_then(|l| serde_json::from_value(l.clone()).ok()).unwrap_or_default();
            if !self.label_selector.matches(&labels) {
                return false;
            }
        }
        if self.field_selector.is_empty() {
            return true;
        }
        let fields = res.strategy.fields(obj);
        self.field_selector.matches(|f| match f {
            "metadata.name" => Some(meta::name(obj).to_string()),
            "metadata.namespace" => Some(meta::get(obj, "namespace").unwrap_or("").to_string()),
            other => fields.iter().find(|(k, _)| *k == other).map(|(_, v)| v.clone()),
        })
    }
}

impl Api {
    /// The object `name`, at the latest revision (or from the cache for resourceVersion=0).
    pub async fn get(&self, res: &Arc<Resource>, ns: Option<&str>, name: &str, resource_version: Option<&str>) -> Result<Value, ApiError> {
        let key = res.key(&self.store_prefix, ns, name);
        if resource_version == Some("0") {
            return self.cache(res)?.get(&key).ok_or_else(|| ApiError::not_found(res, name))?.value();
        }
        let rev = parse_rv(resource_version)?;
        let kv = self.store.get(&key, rev).await.map_err(|e| store_error(res, name, e))?.ok_or_else(|| ApiError::not_found(res, name))?;
        decode_kv(&kv).map_err(ApiError::internal)
    }

    /// The selected objects of `res` in `ns` (all namespaces when None).
    pub async fn list(&self, res: &Arc<Resource>, ns: Option<&str>, opts: &ListOptions) -> Result<(Vec<Value>, ListMeta), ApiError> {
        let prefix = res.list_prefix(&self.store_prefix, ns);
        if opts.resource_version.as_deref() == Some("0") && opts.continue_token.is_none() {
            let (items, rev) = self.cache(res)?.snapshot(&prefix);
            let items = items.iter().filter(|o| opts.matches_cached(res, o)).map(|o| o.value()).collect::<Result<_, _>>()?;
            return Ok((items, ListMeta { resource_version: rev, ..Default::default() }));
        }
        self.list_store(res, &prefix, opts, |kv| {
            let obj = decode_kv(kv).map_err(ApiError::internal)?;
            Ok(opts.matches(res, &obj).then_some(obj))
        })
        .await
    }

    /// [`Api::list`] with the objects as JSON, for answers that send them as they are stored.
    pub async fn list_encoded(&self, res: &Arc<Resource>, ns: Option<&str>, opts: &ListOptions) -> Result<(Vec<Arc<CachedObject>>, ListMeta), ApiError> {
        let prefix = res.list_prefix(&self.store_prefix, ns);
        if opts.resource_version.as_deref() == Some("0") && opts.continue_token.is_none() {
            let (mut items, rev) = self.cache(res)?.snapshot(&prefix);
            items.retain(|o| opts.matches_cached(res, o));
            return Ok((items, ListMeta { resource_version: rev, ..Default::default() }));
        }
        self.list_store(res, &prefix, opts, |kv| {
            let obj = Encoded::from_kv(kv).map_err(ApiError::internal)?;
            if !opts.selects_everything() && !opts.matches(res, &obj.value().map_err(ApiError::internal)?) {
                return Ok(None);
            }
            Ok(Some(Arc::new(CachedObject::new(obj))))
        })
        .await
    }

    /// A list from the store, paging until `opts.limit` selected objects (`select` says which,
    /// in the form wanted) or the end.
    async fn list_store<T>(
        &self,
        res: &Arc<Resource>,
        prefix: &str,
        opts: &ListOptions,
        select: impl Fn(&berth_store::KeyValue) -> Result<Option<T>, ApiError>,
    ) -> Result<(Vec<T>, ListMeta), ApiError> {
        let mut revision = if opts.continue_token.is_some() { None } else { parse_rv(opts.resource_version.as_deref())? };
        let mut token = opts.continue_token.clone();
        let mut items = vec![];
        loop {
            let needed = opts.limit.map(|l| l.saturating_sub(items.len()));
            let page = self
                .store
                .list(prefix, berth_store::ListOptions { revision, limit: needed, continue_token: token.take(), count_remaining: needed.is_some() })
                .await
                .map_err(|e| match e {
                    berth_store::StoreError::Compacted { .. } if opts.continue_token.is_some() => ApiError::gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter."),
                    berth_store::StoreError::Compacted { .. } => ApiError::gone("The resourceVersion for the provided list is too old."),
                    e => store_error(res, "", e),
                })?;
            for kv in &page.kvs {
                if let Some(item) = select(kv)? {
                    items.push(item);
                }
            }
            let full = opts.limit.is_some_and(|l| items.len() >= l);
            match page.continue_token {
                Some(t) if !full => {
                    token = Some(t);
                    revision = None;
                }
                t => {
                    let remaining = if t.is_some() && opts.label_selector.is_empty() && opts.field_selector.is_empty() { page.remaining } else { None };
                    return Ok((items, ListMeta { resource_version: page.revision, continue_token: t, remaining }));
                }
            }
        }
    }
}
