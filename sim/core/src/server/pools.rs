//! Agent pools as Microsoft's task-agent clients manage them: list (by name, ids, type and the
//! caller's permission), get, create, rename and delete.
//!
//! Every pool is an `automation` pool; the emulator keeps no pool properties, so `properties`
//! options select nothing and are accepted. A pool is deleted only when no agent is registered
//! in it and no job of it is waiting or running: the real service deletes the agents with the
//! pool, which here would silently end sessions a load test is measuring.

use super::Server;
use super::auth::Need;
use crate::SimTime;
use crate::api::{ApiError, ApiResponse, Credential, ErrorKind, PoolQuery};
use crate::proto::{ListOf, TaskAgentPool, TaskAgentPoolUpdate};

/// Pools at most (configured ones included); creating one more is refused.
const MAX_POOLS: usize = 1_000;
/// The only pool type emulated.
const AUTOMATION: &str = "automation";

impl Server {
    /// `GET …/pools`: the pools that pass every filter of `query`, in id order.
    pub(super) fn query_pools(
        &self,
        now: SimTime,
        cred: &Credential,
        query: &PoolQuery,
    ) -> Result<ApiResponse, ApiError> {
        self.require_pat_or_listener(now, cred, Need::Read)?;
        if !(self.can_manage_pools(now, cred, query)? && pool_type_matches(query)) {
            return Ok(ApiResponse::Pools(ListOf::new(Vec::new())));
        }
        let pools = self
            .pools
            .iter()
            .filter(|(id, name)| {
                query
                    .pool_name
                    .as_deref()
                    .is_none_or(|n| n.eq_ignore_ascii_case(name))
                    && (query.pool_ids.is_empty() || query.pool_ids.contains(id))
            })
            .map(|(&id, _)| self.pool_view(id))
            .collect();
        Ok(ApiResponse::Pools(ListOf::new(pools)))
    }

    /// `GET …/pools/{poolId}`: 404 when it does not exist or the filters exclude it.
    pub(super) fn get_pool(
        &self,
        now: SimTime,
        cred: &Credential,
        pool_id: u32,
        query: &PoolQuery,
    ) -> Result<ApiResponse, ApiError> {
        self.require_pat_or_listener(now, cred, Need::Read)?;
        self.pool_exists(pool_id)?;
        if !(self.can_manage_pools(now, cred, query)? && pool_type_matches(query)) {
            return Err(ApiError::new(
                ErrorKind::PoolNotFound,
                format!("agent pool {pool_id} does not pass the poolType/actionFilter asked for"),
            ));
        }
        Ok(ApiResponse::Pool(self.pool_view(pool_id)))
    }

    /// `POST …/pools`: a new automation pool with the next free id.
    pub(super) fn add_pool(
        &mut self,
        now: SimTime,
        cred: &Credential,
        pool: TaskAgentPoolUpdate,
    ) -> Result<ApiResponse, ApiError> {
        self.require_pat(now, cred, Need::Manage)?;
        check_pool_type(pool.pool_type.as_deref())?;
        let name = pool
            .name
            .ok_or_else(|| ApiError::new(ErrorKind::BadRequest, "a new pool needs a name"))?;
        self.check_pool_name(0, &name)?;
        if self.pools.len() >= MAX_POOLS {
            return Err(Self::throttled("pools", MAX_POOLS));
        }
        let id = self.pools.keys().next_back().map_or(1, |last| last + 1);
        self.pools.insert(id, name);
        self.journal.meta();
        Ok(ApiResponse::Pool(self.pool_view(id)))
    }

    /// `PATCH …/pools/{poolId}`: rename (the name is all the emulator keeps).
    pub(super) fn update_pool(
        &mut self,
        now: SimTime,
        cred: &Credential,
        pool_id: u32,
        pool: TaskAgentPoolUpdate,
    ) -> Result<ApiResponse, ApiError> {
        self.require_pat(now, cred, Need::Manage)?;
        self.pool_exists(pool_id)?;
        check_pool_type(pool.pool_type.as_deref())?;
        if let Some(name) = pool.name {
            self.check_pool_name(pool_id, &name)?;
            self.pools.insert(pool_id, name);
            self.journal.meta();
        }
        Ok(ApiResponse::Pool(self.pool_view(pool_id)))
    }

    /// `DELETE …/pools/{poolId}`: only an empty pool with no waiting or running job.
    pub(super) fn delete_pool(
        &mut self,
        now: SimTime,
        cred: &Credential,
        pool_id: u32,
    ) -> Result<ApiResponse, ApiError> {
        self.require_pat(now, cred, Need::Manage)?;
        self.pool_exists(pool_id)?;
        let agents = self.pool_sizes.get(&pool_id).copied().unwrap_or(0);
        let jobs = self
            .jobs
            .values()
            .filter(|j| j.pool_id == pool_id && j.result.is_none())
            .count();
        if agents > 0 || jobs > 0 {
            return Err(ApiError::new(
                ErrorKind::BadRequest,
                format!(
                    "agent pool {pool_id} still has {agents} agent(s) and {jobs} unfinished \
                     job(s); the emulator deletes only an empty pool: delete its agents first"
                ),
            ));
        }
        self.pools.remove(&pool_id);
        self.journal.meta();
        self.pool_sizes.remove(&pool_id);
        self.idle.remove(&pool_id);
        Ok(ApiResponse::NoContent)
    }

    /// `actionFilter` (`TaskAgentPoolActionFilter` by name or number: none 0, manage 2, use
    /// 16): `manage` shows pools only to a PAT that may manage them; `use`, `none` and no
    /// filter show them to any reader.
    fn can_manage_pools(
        &self,
        now: SimTime,
        cred: &Credential,
        query: &PoolQuery,
    ) -> Result<bool, ApiError> {
        match query.action_filter.as_deref().map(str::to_ascii_lowercase) {
            None => Ok(true),
            Some(f) if ["none", "0", "use", "16"].contains(&f.as_str()) => Ok(true),
            Some(f) if f == "manage" || f == "2" => {
                Ok(self.require_pat(now, cred, Need::Manage).is_ok())
            }
            Some(_) => Err(ApiError::new(
                ErrorKind::BadRequest,
                "actionFilter must be none, use or manage",
            )),
        }
    }

    fn check_pool_name(&self, pool_id: u32, name: &str) -> Result<(), ApiError> {
        if name.trim().is_empty() || name.len() > 256 {
            return Err(ApiError::new(
                ErrorKind::BadRequest,
                "a pool name must be 1..=256 characters",
            ));
        }
        match self
            .pools
            .iter()
            .find(|(id, n)| **id != pool_id && n.eq_ignore_ascii_case(name))
        {
            Some((other, _)) => Err(ApiError::new(
                ErrorKind::BadRequest,
                format!("agent pool {other} is already named {name:?}; pool names are unique"),
            )),
            None => Ok(()),
        }
    }

    /// The pool as the API shows it.
    pub(super) fn pool_view(&self, pool_id: u32) -> TaskAgentPool {
        TaskAgentPool {
            id: pool_id,
            name: self.pools.get(&pool_id).cloned().unwrap_or_default(),
            is_hosted: false,
            pool_type: AUTOMATION.to_string(),
            size: self.pool_sizes.get(&pool_id).copied().unwrap_or(0),
        }
    }
}

/// `TaskAgentPoolType` by name or number (Microsoft's node client sends numbers): whether it is
/// the automation type.
fn is_automation(pool_type: &str) -> bool {
    pool_type.eq_ignore_ascii_case(AUTOMATION) || pool_type == "1"
}

fn pool_type_matches(query: &PoolQuery) -> bool {
    query.pool_type.as_deref().is_none_or(is_automation)
}

fn check_pool_type(pool_type: Option<&str>) -> Result<(), ApiError> {
    match pool_type {
        Some(t) if !is_automation(t) => Err(ApiError::new(
            ErrorKind::BadRequest,
            format!("the emulator has automation pools only, not {t:?}"),
        )),
        _ => Ok(()),
    }
}
