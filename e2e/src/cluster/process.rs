//! Child processes of a local cluster.
//!
//! Every child asks the kernel to kill it when the launcher dies, however it
//! dies (panic, SIGKILL, a test harness that aborts): a local cluster never
//! outlives its launcher. Linux ties that request to the *thread* that
//! forked, not the process, so every child is forked by one spawner thread
//! that lives as long as the process, whichever thread asked for it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{IoContext, Result};

/// How to start a component (kept, so it can be started again).
#[derive(Clone, Debug)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub dir: PathBuf,
}

/// One running component with its log file.
#[derive(Debug)]
pub struct Component {
    pub name: String,
    pub log: PathBuf,
    launch: Launch,
    child: Child,
}

impl Component {
    /// Starts a component, appending its output to `log`.
    pub fn start(name: &str, launch: Launch, log: &Path) -> Result<Self> {
        let mut command = Command::new(&launch.program);
        command.args(&launch.args).current_dir(&launch.dir);
        let child = Self::spawn(name, command, log)?;
        Ok(Self {
            name: name.to_string(),
            log: log.to_path_buf(),
            launch,
            child,
        })
    }

    /// Stops the component and starts it again with the same arguments.
    pub fn restart(&mut self) -> Result<()> {
        self.stop(Duration::from_secs(15));
        self.start_again()
    }

    fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Child> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .context(|| format!("opening {}", log.display()))?;
        let err = out
            .try_clone()
            .context(|| format!("opening {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        die_with_launcher(&mut command);
        let program = command.get_program().to_string_lossy().into_owned();
        let child = spawn_from_lasting_thread(command)
            .context(|| format!("starting {name} ({program})"))?;
        tracing::info!(component = name, pid = child.id(), log = %log.display(), "started");
        Ok(child)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills the component outright (SIGKILL), as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        tracing::info!(component = %self.name, "killed");
    }

    /// Starts the component again after it stopped or was killed.
    pub fn start_again(&mut self) -> Result<()> {
        if self.exited().is_none() {
            return Ok(());
        }
        let mut command = Command::new(&self.launch.program);
        command
            .args(&self.launch.args)
            .current_dir(&self.launch.dir);
        self.child = Self::spawn(&self.name, command, &self.log)?;
        Ok(())
    }

    /// Asks the component to stop (SIGTERM), and kills it if it has not
    /// stopped within `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                tracing::info!(component = %self.name, "stopped");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::warn!(component = %self.name, grace_secs = grace.as_secs(), "did not stop in time; killing");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

fn spawn_from_lasting_thread(command: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (jobs, queue) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("arktos-spawner".into())
            .spawn(move || {
                for (mut command, reply) in queue {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("starting the spawner thread");
        Mutex::new(jobs)
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send((command, reply))
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}

#[allow(unsafe_code)]
fn die_with_launcher(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let launcher = nix::unistd::getpid();
    // SAFETY: runs between fork and exec; it calls only prctl(2) and
    // getppid(2), which are async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The launcher may have died before the request took effect.
            if nix::unistd::getppid() != launcher {
                return Err(nix::errno::Errno::ESRCH.into());
            }
            Ok(())
        });
    }
}
