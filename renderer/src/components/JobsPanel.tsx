// Jobs at the bottom of the left column: a progress bar each (per model for a pipeline), cancel
// for running ones; finished ones stay a moment for reference.
import type { JobInfo } from '../../../src/service/protocol';
import { useActions, useW } from '../context';
import { percent } from '../format';

function Bar({ value, label }: { value: number; label: string }) {
  return (
    <div className="bar" role="progressbar" aria-valuemin={0} aria-valuemax={100} aria-valuenow={Math.round(value * 100)} aria-label={label}>
      <div className="bar-fill" style={{ width: `${Math.round(value * 1000) / 10}%` }} />
    </div>
  );
}

function JobRow({ job }: { job: JobInfo }) {
  const a = useActions();
  return (
    <li className={`job job-${job.status}`} data-testid="job-progress" data-job-kind={job.kind} data-status={job.status} data-progress={job.progress}>
      <div className="job-line">
        <span className="job-label" title={job.label}>{job.label}</span>
        <span className="job-pct">{job.status === 'running' ? percent(job.progress) : job.status}</span>
        {job.status === 'running' && (
          <button className="small" onClick={() => void a.cancelJob(job.id)} title="cancel this job">
            Cancel
          </button>
        )}
      </div>
      <Bar value={job.progress} label={job.label} />
      <div className="job-detail muted" title={job.detail}>{job.error ? job.error.message : job.detail}</div>
      {job.parts && job.status === 'running' && (
        <ul className="parts">
          {job.parts.map((p) => (
            <li key={p.id} title={`${p.id}: ${p.state}`}>
              <span className="part-id">{p.id}</span>
              <Bar value={p.progress} label={p.id} />
            </li>
          ))}
        </ul>
      )}
    </li>
  );
}

export function JobsPanel() {
  const jobs = useW((s) => s.jobs);
  const list = Object.values(jobs)
    .sort((x, y) => (x.status === 'running' ? 0 : 1) - (y.status === 'running' ? 0 : 1) || y.startedAt.localeCompare(x.startedAt))
    .slice(0, 6);
  if (list.length === 0) return null;
  return (
    <section className="panel jobs" aria-label="jobs">
      <h3>Jobs</h3>
      <ul>
        {list.map((j) => (
          <JobRow key={j.id} job={j} />
        ))}
      </ul>
    </section>
  );
}
