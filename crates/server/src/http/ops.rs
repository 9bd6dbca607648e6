//! Operations shared by the v1 and legacy APIs: each is one store
//! transaction followed by one scheduler command.

use super::auth::Caller;
use super::{ApiError, AppState};
use crate::clock::now_ms;
use crate::scheduler::Command;
use crate::store::{Registered, ServiceRecord};
use healthchecker_core::ServiceSpec;
use sha2::{Digest, Sha256};

/// Refuses a target whose literal IP address the operator denied (a name is
/// checked after DNS at every probe instead).
fn literal_refusal(
    policy: &crate::probe::TargetPolicy,
    spec: &ServiceSpec,
) -> Option<healthchecker_core::SpecError> {
    let ip: std::net::IpAddr = spec.target.host.parse().ok()?;
    policy.refusal(ip).map(|why| {
        healthchecker_core::SpecError::invalid(
            "url",
            format!("invalid target {}: {why}", spec.target.url()),
        )
    })
}

/// A new random service token: 256 bits, hex.
fn new_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::Internal(format!("no randomness: {e}")))?;
    Ok(hex::encode(bytes))
}

/// The stored form of a token (only its hash is kept).
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Runs a store write (the writer connection) off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

impl AppState {
    /// Registers or updates a service; durable before it returns. A new
    /// token is issued at every registration (only its hash is stored).
    pub async fn register(
        &self,
        spec: ServiceSpec,
        caller: &Caller,
    ) -> Result<(Registered, String), ApiError> {
        let token = new_token()?;
        let hash = token_hash(&token);
        Ok((self.upsert(spec, caller, hash).await?, token))
    }

    /// Updates a service from the dashboard's edit form: as [`Self::register`],
    /// but the service keeps its token (the app that registered itself must
    /// still be able to pause or stop itself after a person edits it).
    pub async fn update_keeping_token(
        &self,
        spec: ServiceSpec,
        caller: &Caller,
    ) -> Result<Registered, ApiError> {
        let n = spec.name.clone();
        let hash = match self.read(move |s| s.token_hash(&n)).await? {
            Some(h) => h,
            None => token_hash(&new_token()?),
        };
        self.upsert(spec, caller, hash).await
    }

    async fn upsert(
        &self,
        spec: ServiceSpec,
        caller: &Caller,
        hash: String,
    ) -> Result<Registered, ApiError> {
        // The rate of changes is limited for every state-changing route by
        // `limits::rate_limit`, before this runs.
        self.authorize_change(&caller.headers, &spec.name).await?;
        if let Some(why) = literal_refusal(&self.config.targets, &spec) {
            return Err(ApiError::Invalid(why));
        }
        if !spec.channels.is_empty() {
            // Each named channel must exist (SPEC section 13).
            let names = spec.channels.clone();
            let known = self.read(|s| s.channels()).await?;
            if let Some(n) = names.iter().find(|n| !known.iter().any(|c| &c.name == *n)) {
                return Err(ApiError::bad(
                    "channels",
                    format!("unknown channel {n:?} (create it with POST /api/v1/channels)"),
                ));
            }
        }
        if !spec.depends_on.is_empty() {
            // Parents must exist, and no cycle may form (SPEC section 14).
            let mut graph = self.read(|s| s.dependency_graph()).await?;
            if let Some(n) = spec
                .depends_on
                .iter()
                .find(|n| !graph.contains_key(*n) && **n != spec.name)
            {
                return Err(ApiError::bad(
                    "depends_on",
                    format!("unknown service {n:?} in depends_on"),
                ));
            }
            graph.insert(spec.name.clone(), spec.depends_on.clone());
            if let Some(cycle) = healthchecker_core::policy::find_cycle(&graph) {
                return Err(ApiError::bad(
                    "depends_on",
                    format!("dependency cycle: {}", cycle.join(" -> ")),
                ));
            }
        }
        if spec.target.protocol == healthchecker_core::Protocol::Icmp {
            // A service that could only ever fail is refused up front (SPEC
            // section 15), naming the sysctl that would allow it.
            let v6 = spec.target.host.parse::<std::net::Ipv6Addr>().is_ok();
            if let Some(why) = crate::probe::icmp::socket_refusal(v6).await {
                return Err(ApiError::Invalid(healthchecker_core::SpecError::invalid(
                    "url", why,
                )));
            }
        }
        let store = self.store.clone();
        let max = self.config.max_services;
        let st = store.clone();
        let reg = blocking(move || {
            let r = st.register(&spec, &hash, now_ms(), max);
            st.note_write(&r);
            r
        })
        .await?;
        if !self
            .scheduler
            .send(Command::Upsert(Box::new(reg.record.clone())))
            .await
        {
            return Err(ApiError::Unavailable("the daemon is shutting down".into()));
        }
        self.wake_owner(reg.record.id, &reg.record.spec.name).await;
        Ok(reg)
    }

    /// On a node of a cluster, wakes the service's owner (if another node)
    /// after a committed change: it reads the service again.
    async fn wake_owner(&self, id: healthchecker_core::ServiceId, name: &str) {
        if let Some(n) = &self.notifier {
            n.send(crate::cluster::wake::Wake::Service {
                id,
                name: name.to_string(),
            })
            .await;
        }
    }

    /// Pauses or resumes; `NotFound` for an unknown name.
    pub async fn set_paused(
        &self,
        name: &str,
        paused: bool,
        caller: &Caller,
    ) -> Result<ServiceRecord, ApiError> {
        self.authorize_change(&caller.headers, name).await?;
        let store = self.store.clone();
        let n = name.to_string();
        let rec = blocking(move || store.set_paused(&n, paused, now_ms()))
            .await?
            .ok_or_else(|| ApiError::NotFound(name.to_string()))?;
        self.scheduler
            .send(Command::SetPaused { id: rec.id, paused })
            .await;
        self.wake_owner(rec.id, &rec.spec.name).await;
        Ok(rec)
    }

    /// Stops monitoring and deletes the service; `NotFound` for an unknown name.
    pub async fn delete(&self, name: &str, caller: &Caller) -> Result<(), ApiError> {
        self.authorize_change(&caller.headers, name).await?;
        let store = self.store.clone();
        let n = name.to_string();
        let id = blocking(move || store.delete(&n, now_ms()))
            .await?
            .ok_or_else(|| ApiError::NotFound(name.to_string()))?;
        self.scheduler
            .send(Command::Remove {
                id,
                name: name.to_string(),
            })
            .await;
        self.wake_owner(id, name).await;
        Ok(())
    }

    /// One service by name; `NotFound` for an unknown name.
    pub async fn service(&self, name: &str) -> Result<ServiceRecord, ApiError> {
        let n = name.to_string();
        self.store
            .read(move |store| store.get_service(&n))
            .await?
            .ok_or_else(|| ApiError::NotFound(name.to_string()))
    }

    /// Runs a read on the store's own reader threads (off the async
    /// threads, and off tokio's shared blocking pool: SPEC section 12).
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&crate::store::Store) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        Ok(self.store.read(f).await?)
    }
}
