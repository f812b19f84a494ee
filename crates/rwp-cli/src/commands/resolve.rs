//! What the user typed for a job (its id, a unique prefix of the id, with or
//! without `job-`, or its name) to the job's id, on the client: an exact id
//! is asked for directly, anything else is looked up in the list of jobs
//! the caller may see.

use rwp_sdk::{Client, Job, SdkError};

use crate::error::CliError;

/// At most this many candidates are named in an ambiguity error.
const NAMED_CANDIDATES: usize = 10;

/// The id of the one job `given` names: an id, a unique id prefix (`job-5e76`
/// or `5e76`) or a job name. No match is an error saying so (exit status 1);
/// several are a usage error listing the candidates (exit status 2).
pub async fn job_id(client: &Client, given: &str) -> Result<String, CliError> {
    match client.get(given).await {
        Ok(job) => return Ok(job.id),
        Err(SdkError::NotFound(_) | SdkError::InvalidSpec(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let jobs = client.list().await?;
    pick(given, &jobs).map(|job| job.id.clone())
}

/// The one job of `jobs` that `given` names (see [`job_id`]).
pub fn pick<'j>(given: &str, jobs: &'j [Job]) -> Result<&'j Job, CliError> {
    if let Some(job) = jobs.iter().find(|j| j.id == given) {
        return Ok(job);
    }
    let mut matches: Vec<&Job> = jobs
        .iter()
        .filter(|j| {
            !given.is_empty()
                && (j.id.starts_with(given)
                    || j.id.strip_prefix("job-").is_some_and(|hex| hex.starts_with(given))
                    || j.name == given)
        })
        .collect();
    matches.sort_by(|a, b| (a.created_unix_ms, &a.id).cmp(&(b.created_unix_ms, &b.id)));
    match matches.as_slice() {
        [job] => Ok(job),
        [] => Err(CliError::Other(format!(
            "job {given} not found: no job you may see has it as its id, an id prefix or its name (rwp list shows them)"
        ))),
        many => {
            let named: Vec<String> = many.iter().take(NAMED_CANDIDATES).map(|j| describe(j)).collect();
            let more = many.len().saturating_sub(NAMED_CANDIDATES);
            let rest = if more > 0 { format!(" and {more} more") } else { String::new() };
            Err(CliError::Usage(format!(
                "'{given}' matches {} jobs: {}{rest}; give more of the id",
                many.len(),
                named.join(", ")
            )))
        }
    }
}

/// `job-5e768fc32c72 (name 'first', running)`.
fn describe(job: &Job) -> String {
    if job.name.is_empty() {
        format!("{} ({})", job.id, job.state)
    } else {
        format!("{} (name '{}', {})", job.id, job.name, job.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::jobs::tests::sample_job;

    fn job(id: &str, name: &str, created: i64) -> Job {
        let mut job = sample_job();
        job.id = id.to_owned();
        job.name = name.to_owned();
        job.created_unix_ms = created;
        job
    }

    #[test]
    fn ids_unique_prefixes_and_names_pick_one_job() {
        let jobs = [
            job("job-5e768fc32c72", "first", 1),
            job("job-5e7a00000000", "second", 2),
            job("job-90ab12cd34ef", "first", 3),
            job("job-1234", "job-5e76", 4),
        ];
        let id = |given: &str| pick(given, &jobs).map(|j| j.id.clone()).map_err(|e| e.to_string());
        assert_eq!(id("job-5e768fc32c72"), Ok("job-5e768fc32c72".to_owned()));
        assert_eq!(id("job-5e768"), Ok("job-5e768fc32c72".to_owned()));
        assert_eq!(id("5e768"), Ok("job-5e768fc32c72".to_owned()));
        assert_eq!(id("second"), Ok("job-5e7a00000000".to_owned()));
        assert_eq!(id("90"), Ok("job-90ab12cd34ef".to_owned()));
        let e = pick("first", &jobs).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(
            e.to_string(),
            "'first' matches 2 jobs: job-5e768fc32c72 (name 'first', running), \
             job-90ab12cd34ef (name 'first', running); give more of the id"
        );
        // A prefix and a name alike: every job it could mean is a candidate.
        let e = id("job-5e76").unwrap_err();
        assert_eq!(
            e,
            "'job-5e76' matches 2 jobs: job-5e768fc32c72 (name 'first', running), \
             job-1234 (name 'job-5e76', running); give more of the id"
        );
        assert_eq!(
            id("5e7"),
            Err("'5e7' matches 2 jobs: job-5e768fc32c72 (name 'first', running), \
             job-5e7a00000000 (name 'second', running); give more of the id"
                .to_owned())
        );
        let e = pick("nope", &jobs).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert_eq!(
            e.to_string(),
            "job nope not found: no job you may see has it as its id, an id prefix or its name (rwp list shows them)"
        );
        assert!(pick("", &jobs).is_err());
    }
}
