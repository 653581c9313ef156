//! Events about any object, as client-go's event recorder writes them for the controllers: a
//! core/v1 Event naming the object (what `kubectl describe` lists under Events), written in the
//! background so a sync never waits on it. The same event again (object, type, reason, message)
//! raises the count of the first one instead of adding another, as upstream's correlator does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Resource;

/// How many distinct events are remembered for counting repeats.
const REMEMBERED: usize = 4096;

pub const NORMAL: &str = "Normal";
pub const WARNING: &str = "Warning";

/// What makes two events the same: the object's uid, type, reason and message.
type EventKey = (String, String, String, String);

/// An event written before: its name and namespace, and how often it happened.
struct Seen {
    name: String,
    count: i32,
}

#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    component: String,
    seen: Arc<Mutex<HashMap<EventKey, Seen>>>,
}

/// The reference to `obj` an event carries.
pub fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    let meta = obj.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).to_string()),
        kind: Some(K::kind(&()).to_string()),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..Default::default()
    }
}

impl Recorder {
    pub fn new(client: kube::Client, component: &str) -> Self {
        Recorder { client, component: component.to_string(), seen: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// Records an event about `obj` (in the background).
    pub fn event<K: Resource<DynamicType = ()>>(&self, obj: &K, type_: &str, reason: &str, message: String) {
        self.record(reference(obj), type_, reason, message);
    }

    /// Records an event about the object `involved` (in the background).
    pub fn record(&self, involved: ObjectReference, type_: &str, reason: &str, message: String) {
        let this = self.clone();
        let (type_, reason) = (type_.to_string(), reason.to_string());
        // stamped (and named) now, so events sort in the order they happened
        let now = Timestamp::now();
        tokio::spawn(async move {
            if let Err(e) = this.write(involved, &type_, &reason, &message, now).await {
                tracing::debug!(reason, error = %e, "recording an event");
            }
        });
    }

    async fn write(&self, involved: ObjectReference, type_: &str, reason: &str, message: &str, now: Timestamp) -> Result<(), kube::Error> {
        let namespace = involved.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into());
        let key = (involved.uid.clone().unwrap_or_default(), type_.to_string(), reason.to_string(), message.to_string());
        let events: kube::Api<Event> = kube::Api::namespaced(self.client.clone(), &namespace);
        let repeat = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.get_mut(&key).map(|s| {
                s.count += 1;
                (s.name.clone(), s.count)
            })
        };
        if let Some((name, count)) = repeat {
            let patch = serde_json::json!({"count": count, "lastTimestamp": Time(now), "message": message});
            if events.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await.is_ok() {
                return Ok(());
            }
        }
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", involved.name.as_deref().unwrap_or("event"), now.as_nanosecond())),
                namespace: Some(namespace),
                ..Default::default()
            },
            involved_object: involved,
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(type_.into()),
            source: Some(EventSource { component: Some(self.component.clone()), host: None }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.component.clone()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            ..Default::default()
        };
        let created = events.create(&PostParams::default(), &event).await?;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= REMEMBERED {
            seen.clear();
        }
        seen.insert(key, Seen { name: created.metadata.name.unwrap_or_default(), count: 1 });
        Ok(())
    }
}
