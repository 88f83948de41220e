//! Real OpenStack regions on loopback: Keystone and Neutron from Debian's
//! packages (`python3-keystone`, `python3-neutron`), each on SQLite, served
//! by the system Python's threaded wsgiref, Neutron with ML2 and no agents
//! (the recipe in shared/recipes/openstack-on-loopback.md). A region may
//! also run the Nova API and the Cinder API, for quota sets
//! ([`OpenStackRegion::start_with_compute`], `openstack/nova_cinder.rs`).
//!
//! ```no_run
//! use nordlys_tests::openstack::{self, OpenStackRegion};
//!
//! if !openstack::available("my_test") {
//!     return; // packages absent and NORDLYS_REQUIRE_OPENSTACK unset
//! }
//! let regions = OpenStackRegion::start_all(&["sto1", "osl1"]);
//! let projects = regions[0].openstack(&["project", "list", "--tags", "nordlys"]);
//! assert_eq!(projects.as_array().map(Vec::len), Some(0));
//! ```
//!
//! Start-up is quick because the slow part, Keystone's schema and bootstrap,
//! is done once into a template (cached in the temp dir per Keystone version)
//! that each region copies; each copy gets fresh Fernet keys, its own ports
//! and its own catalog, so two regions share nothing. The Python processes
//! run in their own process groups, killed on drop, and also exit by
//! themselves when the test process goes away (a watchdog thread), so even a
//! shared region in a `static` leaves nothing behind.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, OnceLock},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tempfile::TempDir;

mod nova_cinder;

/// Set (to anything) to make tests that need OpenStack fail instead of skip
/// when the Debian packages are missing; CI sets it.
pub const REQUIRE_ENV: &str = "NORDLYS_REQUIRE_OPENSTACK";

/// The password of each region's bootstrapped `admin` user.
pub const ADMIN_PASSWORD: &str = "nordlys-test-secret";

/// How long a region may take to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(90);

const PYTHON: &str = "/usr/bin/python3";
const DIST: &str = "/usr/lib/python3/dist-packages";

/// Whether Keystone, Neutron and the openstack CLI are installed.
pub fn installed() -> bool {
    Path::new(DIST).join("keystone").is_dir()
        && Path::new(DIST).join("neutron").is_dir()
        && Path::new("/usr/bin/keystone-manage").is_file()
        && Path::new("/usr/bin/openstack").is_file()
}

/// Whether a test that needs OpenStack should run. Without the packages it
/// prints why it skips and returns false, unless [`REQUIRE_ENV`] is set,
/// when it panics instead.
pub fn available(test: &str) -> bool {
    if installed() {
        return true;
    }
    let hint = "apt-get install python3-keystone python3-neutron python3-openstackclient";
    if std::env::var_os(REQUIRE_ENV).is_some() {
        panic!("{test}: {REQUIRE_ENV} is set but Keystone/Neutron are not installed ({hint})");
    }
    eprintln!("SKIPPED {test}: Keystone/Neutron are not installed ({hint}; set {REQUIRE_ENV}=1 to fail instead)");
    false
}

/// Whether the Nova and Cinder APIs can run here besides Keystone and
/// Neutron (for [`OpenStackRegion::start_with_compute`]).
pub fn compute_installed() -> bool {
    installed() && nova_cinder::installed()
}

/// [`available`] for tests that also need the Nova and Cinder APIs: skips
/// without them, or panics when [`REQUIRE_ENV`] is set.
pub fn available_with_compute(test: &str) -> bool {
    if !available(test) {
        return false;
    }
    if nova_cinder::installed() {
        return true;
    }
    let hint = nova_cinder::HINT;
    if std::env::var_os(REQUIRE_ENV).is_some() {
        panic!("{test}: {REQUIRE_ENV} is set but Nova/Cinder are not installed ({hint})");
    }
    eprintln!("SKIPPED {test}: Nova/Cinder are not installed ({hint}; set {REQUIRE_ENV}=1 to fail instead)");
    false
}

fn run(command: &mut Command, what: &str) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An installed Python package's version (`keystone`, `nova`, ...), so a
/// package upgrade gets a new template.
fn package_version(package: &str) -> String {
    let prefix = format!("{package}-");
    fs::read_dir(DIST)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .find(|n| n.starts_with(&prefix) && n.ends_with("-info"))
        .map(|n| {
            n.trim_start_matches(&prefix)
                .split(".egg")
                .next()
                .unwrap_or_default()
                .split(".dist")
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_else(|| "unknown".into())
}

fn keystone_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "[DEFAULT]\nlog_file = {d}/keystone.log\n[database]\nconnection = sqlite:///{d}/keystone.db\n\
         [token]\nprovider = fernet\n[fernet_tokens]\nkey_repository = {d}/fernet-keys\n\
         [credential]\nkey_repository = {d}/credential-keys\n"
    )
}

/// Keystone's database (schema, bootstrap admin, the admin/member/reader
/// roles) and key repositories, made once per Keystone version and machine.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let root = std::env::temp_dir();
        let dir = root.join(format!(
            "nordlys-keystone-template-{}",
            package_version("keystone")
        ));
        if dir.join("ready").is_file() {
            return dir;
        }
        let build = tempfile::Builder::new()
            .prefix("nordlys-keystone-template-build-")
            .tempdir_in(&root)
            .unwrap_or_else(|e| panic!("template dir: {e}"));
        let b = build.path();
        let conf = b.join("keystone.conf");
        fs::write(&conf, keystone_conf(b)).unwrap_or_else(|e| panic!("keystone.conf: {e}"));
        let manage = |args: &[&str]| {
            run(
                Command::new("/usr/bin/keystone-manage")
                    .arg("--config-file")
                    .arg(&conf)
                    .args(args),
                &format!("keystone-manage {}", args[0]),
            )
        };
        manage(&["db_sync"]);
        manage(&[
            "fernet_setup",
            "--keystone-user",
            "root",
            "--keystone-group",
            "root",
        ]);
        manage(&[
            "credential_setup",
            "--keystone-user",
            "root",
            "--keystone-group",
            "root",
        ]);
        // The endpoint URLs are placeholders: each region rewrites them.
        manage(&[
            "bootstrap",
            "--bootstrap-password",
            ADMIN_PASSWORD,
            "--bootstrap-public-url",
            "http://127.0.0.1:1/v3",
            "--bootstrap-internal-url",
            "http://127.0.0.1:1/v3",
            "--bootstrap-admin-url",
            "http://127.0.0.1:1/v3",
            "--bootstrap-region-id",
            "RegionOne",
        ]);
        publish_template(build, dir, "Keystone")
    })
}

/// Marks a template built in `build` ready and moves it to `dir`, where
/// test processes look for it; when another process got there first, its
/// template is used and this one dropped.
pub(crate) fn publish_template(build: TempDir, dir: PathBuf, what: &str) -> PathBuf {
    fs::write(build.path().join("ready"), "").unwrap_or_else(|e| panic!("template marker: {e}"));
    let build = build.keep();
    if fs::rename(&build, &dir).is_err() {
        let _ = fs::remove_dir_all(&build);
    }
    assert!(
        dir.join("ready").is_file(),
        "no {what} template in {}",
        dir.display()
    );
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        let target = to.join(entry.file_name());
        fs::copy(entry.path(), &target).unwrap_or_else(|e| panic!("{}: {e}", target.display()));
    }
    // Keystone wants its key repositories private.
    let _ = fs::set_permissions(to, fs::Permissions::from_mode(0o700));
}

/// Serves a Keystone made from a template copy: fresh keys, this port in
/// the catalog, and a `network` service pointing at the paired Neutron
/// (and, given their ports, `compute` and `volumev3` at Nova and Cinder).
const KEYSTONE_SERVE: &str = r#"
import base64, faulthandler, json, os, sqlite3, sys, threading, time, uuid
# A crash of the interpreter leaves its stack in the log, not silence.
faulthandler.enable()
d, port, nport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
parent = os.getppid()
def watchdog():
    # Exit with the test process, however it ends, taking the region's
    # files along (a region kept in a static is never dropped).
    while os.getppid() == parent:
        time.sleep(0.5)
    import shutil
    shutil.rmtree(d, ignore_errors=True)
    os._exit(0)
threading.Thread(target=watchdog, daemon=True).start()
for repo in ('fernet-keys', 'credential-keys'):
    path = os.path.join(d, repo)
    for name in os.listdir(path):
        with open(os.path.join(path, name), 'wb') as f:
            f.write(base64.urlsafe_b64encode(os.urandom(32)))
db = sqlite3.connect(os.path.join(d, 'keystone.db'))
db.execute('PRAGMA journal_mode=WAL')
kurl = 'http://127.0.0.1:%d/v3' % port
db.execute("UPDATE endpoint SET url=? WHERE service_id IN (SELECT id FROM service WHERE type='identity')", (kurl,))
def service(kind, name, url):
    row = db.execute("SELECT id FROM service WHERE type=?", (kind,)).fetchone()
    if row is None:
        sid = uuid.uuid4().hex
        db.execute("INSERT INTO service (id, type, enabled, extra) VALUES (?, ?, 1, ?)", (sid, kind, json.dumps({'name': name})))
        for iface in ('public', 'internal', 'admin'):
            db.execute("INSERT INTO endpoint (id, interface, service_id, url, extra, enabled, region_id) VALUES (?, ?, ?, ?, '{}', 1, 'RegionOne')", (uuid.uuid4().hex, iface, sid, url))
    else:
        db.execute("UPDATE endpoint SET url=? WHERE service_id=?", (url, row[0]))
service('network', 'neutron', 'http://127.0.0.1:%d' % nport)
if len(sys.argv) > 5:
    service('compute', 'nova', 'http://127.0.0.1:%d/v2.1' % int(sys.argv[4]))
    # Cinder's URL names the caller's project; Keystone fills it in.
    service('volumev3', 'cinderv3', 'http://127.0.0.1:%d/v3/%%(project_id)s' % int(sys.argv[5]))
db.commit()
db.close()
from wsgiref.simple_server import make_server, WSGIServer, WSGIRequestHandler
from socketserver import ThreadingMixIn
sys.argv = [sys.argv[0], '--config-file', os.path.join(d, 'keystone.conf')]
from keystone.server.wsgi import initialize_public_application
class Threaded(ThreadingMixIn, WSGIServer):
    daemon_threads = True
class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass
app = initialize_public_application()
# SQLite fails concurrent writers with "database is locked" (no waiting when a
# reader turns writer): one request at a time in the app.
lock = threading.Lock()
# The trace context each request carried, for the trace tests.
def note_traceparent(server, environ):
    tp = environ.get('HTTP_TRACEPARENT')
    if tp:
        with open(os.path.join(d, server + '.traceparents'), 'a') as f:
            f.write('%s %s %s\n' % (environ.get('REQUEST_METHOD'), environ.get('PATH_INFO'), tp))
def serial(environ, start_response):
    with lock:
        note_traceparent('keystone', environ)
        return list(app(environ, start_response))
server = make_server('127.0.0.1', port, serial, server_class=Threaded, handler_class=Quiet)
print('keystone ready', flush=True)
server.serve_forever()
"#;

/// Serves Neutron's API (ML2, no agents) on SQLite, creating the schema from
/// the models (alembic cannot migrate SQLite).
const NEUTRON_SERVE: &str = r#"
import faulthandler, os, sys, threading, time
# A crash of the interpreter leaves its stack in the log, not silence.
faulthandler.enable()
# Load the security group models before anything imports
# standardattrdescription_db: its resource extenders are bound at import,
# and rules loaded later would never show their description.
import neutron.db.models.securitygroup  # noqa: F401
d, port = sys.argv[1], int(sys.argv[2])
parent = os.getppid()
def watchdog():
    while os.getppid() == parent:
        time.sleep(0.5)
    import shutil
    shutil.rmtree(d, ignore_errors=True)
    os._exit(0)
threading.Thread(target=watchdog, daemon=True).start()
db = os.path.join(d, 'neutron.db')
if not os.path.exists(db):
    import sqlalchemy as sa
    from neutron.db.migration.models import head
    head.get_metadata().create_all(sa.create_engine('sqlite:///' + db))
    import sqlite3
    c = sqlite3.connect(db)
    c.execute('PRAGMA journal_mode=WAL')
    c.close()
from wsgiref.simple_server import make_server, WSGIServer, WSGIRequestHandler
from socketserver import ThreadingMixIn
sys.argv = ['neutron-api', '--config-file', os.path.join(d, 'neutron.conf'), '--config-file', os.path.join(d, 'ml2_conf.ini')]
from neutron.common import config
config.register_common_config_options()
config.init(sys.argv[1:])
config.setup_logging()
app = config.load_paste_app('neutron')
# SQLite fails concurrent writers with "database is locked": one request at
# a time in the app.
lock = threading.Lock()
# The trace context each request carried, for the trace tests.
def note_traceparent(server, environ):
    tp = environ.get('HTTP_TRACEPARENT')
    if tp:
        with open(os.path.join(d, server + '.traceparents'), 'a') as f:
            f.write('%s %s %s\n' % (environ.get('REQUEST_METHOD'), environ.get('PATH_INFO'), tp))
def serial(environ, start_response):
    with lock:
        note_traceparent('neutron', environ)
        return list(app(environ, start_response))
class Threaded(ThreadingMixIn, WSGIServer):
    daemon_threads = True
class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass
server = make_server('127.0.0.1', port, serial, server_class=Threaded, handler_class=Quiet)
print('neutron ready', flush=True)
server.serve_forever()
"#;

fn neutron_conf(dir: &Path, keystone_port: u16) -> String {
    let d = dir.display();
    format!(
        "[DEFAULT]\napi_paste_config = {DIST}/neutron/tests/etc/api-paste.ini\ncore_plugin = ml2\n\
         service_plugins =\nauth_strategy = keystone\ntransport_url = fake:/\n\
         log_file = {d}/neutron.log\nstate_path = {d}\n[database]\nconnection = sqlite:///{d}/neutron.db\n\
         [keystone_authtoken]\ninterface = public\nwww_authenticate_uri = http://127.0.0.1:{keystone_port}\n\
         auth_url = http://127.0.0.1:{keystone_port}\nauth_type = password\nproject_domain_name = Default\n\
         user_domain_name = Default\nproject_name = admin\nusername = admin\npassword = {ADMIN_PASSWORD}\n\
         [oslo_concurrency]\nlock_path = {d}/lock\n"
    )
}

const ML2_CONF: &str = "[ml2]\ntype_drivers = flat,vxlan,local\ntenant_network_types = vxlan\n\
mechanism_drivers =\nextension_drivers = port_security\n[ml2_type_vxlan]\nvni_ranges = 1:1000\n\
[securitygroup]\nenable_security_group = true\n";

/// One running Python server in its own process group.
#[derive(Debug)]
struct Server {
    child: Child,
}

impl Server {
    /// "running", or how it is not, from /proc (no wait: a zombie stays
    /// for `kill` to reap).
    fn state(&self) -> String {
        let pid = self.child.id();
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => match stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
            {
                Some("Z") | Some("X") => format!("pid {pid} has exited"),
                Some(_) => format!("pid {pid} running"),
                None => format!("pid {pid}: unreadable stat"),
            },
            Err(_) => format!("pid {pid} is gone"),
        }
    }

    fn spawn(
        name: &'static str,
        script: &Path,
        args: &[String],
        log: &Path,
    ) -> (Server, mpsc::Receiver<String>) {
        let stderr = fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let mut child = Command::new(PYTHON)
            .arg(script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        (Server { child }, rx)
    }

    fn kill(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        // The whole group: the server and anything it started.
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The servers of a region, in the order of its `servers`.
const SERVERS: [&str; 4] = ["keystone", "neutron", "nova", "cinder"];

/// One OpenStack region: a Keystone and a Neutron of its own (and maybe a
/// Nova API and a Cinder API), a `clouds.yaml` entry named after the
/// region, cleaned up on drop.
#[derive(Debug)]
pub struct OpenStackRegion {
    name: String,
    keystone_port: u16,
    neutron_port: u16,
    /// The Nova API's and the Cinder API's ports, when the region has them.
    compute_ports: Option<(u16, u16)>,
    /// Keystone, Neutron, then Nova and Cinder if started; behind a lock so
    /// a shared region's Neutron can be restarted by a test that holds it
    /// only by reference.
    servers: std::sync::Mutex<Vec<Server>>,
    dir: TempDir,
}

impl OpenStackRegion {
    /// Starts a region and waits until Keystone and Neutron answer.
    pub fn start(name: &str) -> OpenStackRegion {
        OpenStackRegion::start_region(name, false)
    }

    /// Starts a region with a Nova API and a Cinder API too (`compute` and
    /// `volumev3` in its catalog), for quota sets; see
    /// [`compute_installed`].
    pub fn start_with_compute(name: &str) -> OpenStackRegion {
        OpenStackRegion::start_region(name, true)
    }

    fn start_region(name: &str, compute: bool) -> OpenStackRegion {
        let template = template();
        if compute {
            nova_cinder::prepare();
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("nordlys-openstack-{name}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("region dir: {e}"));
        let d = dir.path();
        fs::copy(template.join("keystone.db"), d.join("keystone.db"))
            .unwrap_or_else(|e| panic!("keystone.db: {e}"));
        copy_dir(&template.join("fernet-keys"), &d.join("fernet-keys"));
        copy_dir(
            &template.join("credential-keys"),
            &d.join("credential-keys"),
        );
        fs::create_dir_all(d.join("lock")).unwrap_or_else(|e| panic!("lock dir: {e}"));
        let (keystone_port, neutron_port) = (crate::free_port(), crate::free_port());
        let compute_ports = compute.then(|| (crate::free_port(), crate::free_port()));
        let write = |file: &str, text: &str| {
            fs::write(d.join(file), text).unwrap_or_else(|e| panic!("{file}: {e}"))
        };
        write("keystone.conf", &keystone_conf(d));
        write("neutron.conf", &neutron_conf(d, keystone_port));
        write("ml2_conf.ini", ML2_CONF);
        write("keystone_serve.py", KEYSTONE_SERVE);
        write("neutron_serve.py", NEUTRON_SERVE);
        write(
            "clouds.yaml",
            &format!(
                "clouds:\n  {name}:\n    auth:\n      auth_url: http://127.0.0.1:{keystone_port}/v3\n      \
                 username: admin\n      password: {ADMIN_PASSWORD}\n      project_name: admin\n      \
                 user_domain_name: Default\n      project_domain_name: Default\n    \
                 region_name: RegionOne\n    interface: public\n    identity_api_version: 3\n"
            ),
        );
        let dir_arg = d.display().to_string();
        let (keystone, keystone_ready) = Server::spawn(
            "keystone",
            &d.join("keystone_serve.py"),
            &keystone_args(d, keystone_port, neutron_port, compute_ports),
            &d.join("keystone.stderr"),
        );
        let (neutron, neutron_ready) = Server::spawn(
            "neutron",
            &d.join("neutron_serve.py"),
            &[dir_arg.clone(), neutron_port.to_string()],
            &d.join("neutron.stderr"),
        );
        let mut servers = vec![keystone, neutron];
        let mut readiness = vec![("keystone", keystone_ready), ("neutron", neutron_ready)];
        if let Some((nova_port, cinder_port)) = compute_ports {
            nova_cinder::set_up(d, keystone_port);
            for (server, port) in [("nova", nova_port), ("cinder", cinder_port)] {
                let script = d.join(format!("{server}_serve.py"));
                let body = match server {
                    "nova" => nova_cinder::NOVA_SERVE,
                    _ => nova_cinder::CINDER_SERVE,
                };
                write(&format!("{server}_serve.py"), &nova_cinder::script(body));
                let (child, ready) = Server::spawn(
                    server,
                    &script,
                    &[dir_arg.clone(), port.to_string()],
                    &d.join(format!("{server}.stderr")),
                );
                servers.push(child);
                readiness.push((server, ready));
            }
        }
        let region = OpenStackRegion {
            name: name.to_string(),
            keystone_port,
            neutron_port,
            compute_ports,
            servers: std::sync::Mutex::new(servers),
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        for (server, ready) in readiness {
            let left = deadline.saturating_duration_since(Instant::now());
            match ready.recv_timeout(left) {
                Ok(line) if line.ends_with("ready") => {}
                other => panic!(
                    "{server} of region {name} did not start ({other:?}):\n{}",
                    region.log_tail(server)
                ),
            }
        }
        region
    }

    /// Starts several regions at once (in parallel: about as quick as one).
    pub fn start_all(names: &[&str]) -> Vec<OpenStackRegion> {
        template();
        let handles: Vec<_> = names
            .iter()
            .map(|name| {
                let name = name.to_string();
                thread::spawn(move || OpenStackRegion::start(&name))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| panic!("a region did not start"))
            })
            .collect()
    }

    /// A region shared by every test of this process, started on first use
    /// (its servers exit with the process).
    pub fn shared() -> &'static OpenStackRegion {
        static SHARED: OnceLock<OpenStackRegion> = OnceLock::new();
        SHARED.get_or_init(|| OpenStackRegion::start("shared"))
    }

    /// The region's name, also its `clouds.yaml` entry.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `clouds.yaml` holding this region's entry.
    pub fn clouds_file(&self) -> PathBuf {
        self.dir.path().join("clouds.yaml")
    }

    /// Keystone's URL.
    pub fn auth_url(&self) -> String {
        format!("http://127.0.0.1:{}/v3", self.keystone_port)
    }

    /// Neutron's URL.
    pub fn neutron_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.neutron_port)
    }

    /// The Nova API's URL (as in the catalog), if the region has one.
    pub fn compute_url(&self) -> Option<String> {
        self.compute_ports
            .map(|(nova, _)| format!("http://127.0.0.1:{nova}/v2.1"))
    }

    /// Adds a live instance (`vcpus`, `memory_mb`) of a Keystone project to
    /// the Nova API's cell0 database, so the project's compute usage counts
    /// it (nothing here can boot a server). Needs
    /// [`OpenStackRegion::start_with_compute`].
    pub fn add_instance(&self, project_id: &str, vcpus: u32, memory_mb: u32) {
        assert!(
            self.compute_ports.is_some(),
            "region {} has no Nova",
            self.name
        );
        nova_cinder::add_instance(self.dir.path(), project_id, vcpus, memory_mb);
    }

    /// The environment that points OpenStack clients (regiond included) at
    /// this region: `OS_CLOUD` and `OS_CLIENT_CONFIG_FILE`.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("OS_CLOUD".into(), self.name.clone()),
            (
                "OS_CLIENT_CONFIG_FILE".into(),
                self.clouds_file().display().to_string(),
            ),
        ]
    }

    /// The requests `server` (`keystone` or `neutron`) received with a
    /// `traceparent` header: method, path and the header, in order.
    pub fn received_traceparents(&self, server: &str) -> Vec<(String, String, String)> {
        let text = fs::read_to_string(self.dir.path().join(format!("{server}.traceparents")))
            .unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let mut fields = line.splitn(3, ' ');
                Some((
                    fields.next()?.to_owned(),
                    fields.next()?.to_owned(),
                    fields.next()?.to_owned(),
                ))
            })
            .collect()
    }

    /// Whether Keystone and Neutron are still running, for failure messages:
    /// a refused connection is then either a dead server or a wrong port.
    /// Each server's state, and the log tail of any that is not running
    /// (why it stopped).
    fn states(&self) -> String {
        let states: Vec<(&str, String)> = {
            let servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
            SERVERS
                .iter()
                .zip(servers.iter())
                .map(|(name, server)| (*name, server.state()))
                .collect()
        };
        let mut out = states
            .iter()
            .map(|(name, state)| format!("{name} {state}"))
            .collect::<Vec<_>>()
            .join(", ");
        for (name, state) in &states {
            if !state.ends_with("running") {
                out.push_str(&format!("\n--- {name}'s log tail\n{}", self.log_tail(name)));
            }
        }
        out
    }

    fn log_tail(&self, server: &str) -> String {
        let mut out = String::new();
        for file in [format!("{server}.stderr"), format!("{server}.log")] {
            let text = fs::read_to_string(self.dir.path().join(&file)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            out.push_str(&format!("--- {file}\n{tail}\n"));
        }
        out
    }

    fn cli(&self) -> Command {
        let mut command = Command::new("/usr/bin/openstack");
        command.envs(self.env()).env_remove("OS_CLIENT_CONFIG_PATH");
        command
    }

    /// Runs one `openstack` CLI command with `-f json`; its output, or why
    /// it failed.
    pub fn try_openstack(&self, args: &[&str]) -> Result<Value, String> {
        let out = self
            .cli()
            .args(args)
            .args(["-f", "json"])
            .output()
            .map_err(|e| format!("cannot run openstack: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "openstack {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Runs one `openstack` CLI command with `-f json`; panics on failure.
    pub fn openstack(&self, args: &[&str]) -> Value {
        self.try_openstack(args).unwrap_or_else(|e| {
            panic!(
                "openstack {} in {}: {e}\n({})",
                args.join(" "),
                self.name,
                self.states()
            )
        })
    }

    /// Runs one `openstack` CLI command that prints nothing (a delete);
    /// panics on failure.
    pub fn openstack_quiet(&self, args: &[&str]) {
        let out = self
            .cli()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run openstack: {e}"));
        assert!(
            out.status.success(),
            "openstack {} in {}: {}",
            args.join(" "),
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs several CLI commands in one `openstack` process (its
    /// interactive mode reads them from stdin), which saves the client's
    /// start-up per command. Each must succeed and print JSON.
    pub fn openstack_many(&self, commands: &[Vec<String>]) -> Vec<Value> {
        let mut child = self
            .cli()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run openstack: {e}"));
        if let Some(mut stdin) = child.stdin.take() {
            for command in commands {
                let line = command
                    .iter()
                    .map(|a| {
                        // Quoting a plain word confuses the command lookup.
                        if a.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.:@/=".contains(c))
                        {
                            a.clone()
                        } else {
                            format!("'{}'", a.replace('\'', "'\\''"))
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                let _ = writeln!(stdin, "{line} -f json");
            }
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("openstack: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let values: Vec<Value> = serde_json::Deserializer::from_str(&stdout)
            .into_iter::<Value>()
            .map_while(Result::ok)
            .collect();
        assert_eq!(
            values.len(),
            commands.len(),
            "openstack in {}: not every command printed JSON\ncommands: {commands:?}\nstdout: {stdout}\nstderr: {}\n({})",
            self.name,
            String::from_utf8_lossy(&out.stderr),
            self.states()
        );
        values
    }

    /// Restarts Keystone with fresh Fernet keys: every token issued so far
    /// is now invalid (as after a key rotation), so clients must
    /// re-authenticate.
    pub fn restart_keystone(&mut self) {
        let servers = self.servers.get_mut().unwrap_or_else(|e| e.into_inner());
        servers[0].kill();
        let d = self.dir.path();
        let (server, ready) = Server::spawn(
            "keystone",
            &d.join("keystone_serve.py"),
            &keystone_args(d, self.keystone_port, self.neutron_port, self.compute_ports),
            &d.join("keystone.stderr"),
        );
        self.servers.get_mut().unwrap_or_else(|e| e.into_inner())[0] = server;
        match ready.recv_timeout(START_TIMEOUT) {
            Ok(line) if line.ends_with("ready") => {}
            other => panic!(
                "keystone of region {} did not restart ({other:?}):\n{}",
                self.name,
                self.log_tail("keystone")
            ),
        }
    }

    /// Stops every server of the region now (a region outage).
    pub fn stop(&mut self) {
        for server in self.servers.get_mut().unwrap_or_else(|e| e.into_inner()) {
            server.kill();
        }
    }

    /// Kills Neutron, keeps it down for `down`, and starts it again on the
    /// same port and database (a Neutron outage and recovery).
    pub fn restart_neutron(&self, down: Duration) {
        self.stop_neutron();
        thread::sleep(down);
        self.start_neutron();
    }

    /// Kills Neutron (Keystone stays up).
    pub fn stop_neutron(&self) {
        self.servers.lock().unwrap_or_else(|e| e.into_inner())[1].kill();
    }

    /// Starts Neutron again on its port and database, after
    /// [`OpenStackRegion::stop_neutron`].
    pub fn start_neutron(&self) {
        let d = self.dir.path();
        let (server, ready) = Server::spawn(
            "neutron",
            &d.join("neutron_serve.py"),
            &[d.display().to_string(), self.neutron_port.to_string()],
            &d.join("neutron.stderr"),
        );
        self.servers.lock().unwrap_or_else(|e| e.into_inner())[1] = server;
        match ready.recv_timeout(START_TIMEOUT) {
            Ok(line) if line.ends_with("ready") => {}
            other => panic!(
                "neutron of region {} did not restart ({other:?}):\n{}",
                self.name,
                self.log_tail("neutron")
            ),
        }
    }
}

impl Drop for OpenStackRegion {
    fn drop(&mut self) {
        if thread::panicking() {
            let started = self
                .servers
                .get_mut()
                .map(|s| s.len())
                .unwrap_or(SERVERS.len());
            for server in &SERVERS[..started.min(SERVERS.len())] {
                eprintln!(
                    "=== {} of region {}:\n{}",
                    server,
                    self.name,
                    self.log_tail(server)
                );
            }
        }
        for server in self.servers.get_mut().unwrap_or_else(|e| e.into_inner()) {
            server.kill();
        }
    }
}

/// The arguments of KEYSTONE_SERVE: dir, ports of Keystone, Neutron (and
/// Nova and Cinder, for the catalog).
fn keystone_args(
    d: &Path,
    keystone_port: u16,
    neutron_port: u16,
    compute_ports: Option<(u16, u16)>,
) -> Vec<String> {
    let mut args = vec![
        d.display().to_string(),
        keystone_port.to_string(),
        neutron_port.to_string(),
    ];
    if let Some((nova, cinder)) = compute_ports {
        args.extend([nova.to_string(), cinder.to_string()]);
    }
    args
}

/// The names of a JSON list's items under `key` (`Name`, `Tags`, ...).
pub fn column(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| match &item[key] {
                    Value::String(s) => Some(s.clone()),
                    Value::Null => None,
                    other => Some(other.to_string()),
                })
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// The whole stack on OpenStack regions

/// The quota tiers every test regiond gets: `small` for all organizations
/// but `bigcorp`, which is `large` (Neutron quota values, as Adjutant sizes
/// them).
pub const TIERS_TOML: &str = r#"
[openstack]
default_tier = "small"

[openstack.organization_tiers]
bigcorp = "large"

[openstack.tiers.small]
network = 2
subnet = 2
port = 20
security_group = 4
security_group_rule = 40

[openstack.tiers.large]
network = 20
subnet = 20
port = 200
security_group = 10
security_group_rule = 200
"#;

/// Tiers that size Nova and Cinder as well as Neutron (one table each;
/// regiond sorts the names by service), for regions started with
/// [`OpenStackRegion::start_with_compute`]: a regiond with these refuses to
/// start on a region without `compute` and `volumev3` in its catalog.
pub const COMPUTE_TIERS_TOML: &str = r#"
[openstack]
default_tier = "standard"

[openstack.tiers.standard]
network = 3
security_group = 5
instances = 5
cores = 8
ram = 16384
volumes = 7
gigabytes = 200
snapshots = 3
"#;

/// A regiond config file with [`TIERS_TOML`] (and `extra` TOML appended to
/// the `[openstack]` table's siblings), in its own temp dir.
pub fn regiond_config(extra: &str) -> TempDir {
    regiond_config_with_tiers(extra, TIERS_TOML)
}

/// [`regiond_config`] with other tiers (a `[openstack]` table and its
/// `tiers`), such as [`COMPUTE_TIERS_TOML`].
pub fn regiond_config_with_tiers(extra: &str, tiers: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("nordlys-regiond-config-")
        .tempdir()
        .unwrap_or_else(|e| panic!("config dir: {e}"));
    fs::write(dir.path().join("regiond.toml"), format!("{extra}\n{tiers}"))
        .unwrap_or_else(|e| panic!("regiond.toml: {e}"));
    dir
}

/// Starts `regiond --backend openstack` for `region`, configured by the
/// `regiond.toml` in `config` (see [`regiond_config`]), with extra
/// environment (for example the crash hook `NORDLYS_TEST_CRASH_AFTER`).
pub fn regiond(
    nats: &crate::NatsServer,
    region: &OpenStackRegion,
    config: &Path,
    env: &[(&str, &str)],
) -> crate::Regiond {
    crate::Regiond {
        process: crate::Process::start(regiond_spec(nats, region, config, env)),
        region: region.name().to_string(),
    }
}

fn regiond_spec(
    nats: &crate::NatsServer,
    region: &OpenStackRegion,
    config: &Path,
    env: &[(&str, &str)],
) -> crate::Spec {
    let mut spec = crate::Spec::new("regiond", "nordlys-regiond ready").args([
        "--nats-url".to_string(),
        nats.url(),
        "--region".to_string(),
        region.name().to_string(),
        "--backend".to_string(),
        "openstack".to_string(),
        "--insecure-dev".to_string(),
        "--config".to_string(),
        config.join("regiond.toml").display().to_string(),
        // A free port, shown on the ready line (see Regiond::metrics_addr).
        "--metrics-listen".to_string(),
        "127.0.0.1:0".to_string(),
    ]);
    for (key, value) in region.env() {
        spec = spec.env(&key, &value);
    }
    for (key, value) in env {
        spec = spec.env(key, value);
    }
    spec
}

/// A [`Stack`](crate::Stack) whose regions `sto1` and `osl1` are real
/// OpenStack regions: nats-server, quota, regiond `--backend openstack`
/// (two `sto1` instances sharing one cloud, one `osl1`) and the gateway.
/// Derefs to the `Stack`, so its helpers (tenants, quotas) work as usual.
#[derive(Debug)]
pub struct OpenStackStack {
    /// The Nordlys processes (dropped first).
    pub stack: crate::Stack,
    /// `sto1` and `osl1`.
    pub regions: Vec<OpenStackRegion>,
    config: TempDir,
}

impl OpenStackStack {
    /// Starts the regions (in parallel with NATS and quota) and the rest,
    /// and waits until the gateway sees every regiond.
    pub async fn start() -> OpenStackStack {
        OpenStackStack::start_with(&[]).await
    }

    /// [`OpenStackStack::start`] with extra environment for every regiond.
    pub async fn start_with(regiond_env: &[(&str, &str)]) -> OpenStackStack {
        let starting = thread::spawn(|| OpenStackRegion::start_all(&["sto1", "osl1"]));
        let nats = crate::NatsServer::start();
        let quota = crate::Quota::start(&nats);
        let regions = starting
            .join()
            .unwrap_or_else(|_| panic!("the OpenStack regions did not start"));
        let config = regiond_config("");
        // The regions settle what calls leave behind within seconds (longer
        // than a create takes on these clouds).
        let mut env = vec![
            ("NORDLYS_SETTLE_GRACE_MS", "8000"),
            ("NORDLYS_SETTLE_INTERVAL_MS", "1000"),
        ];
        env.extend_from_slice(regiond_env);
        let sto1_a = regiond(&nats, &regions[0], config.path(), &env);
        let sto1_b = regiond(&nats, &regions[0], config.path(), &env);
        let osl1 = regiond(&nats, &regions[1], config.path(), &env);
        let gateway = crate::Gateway::start(&nats, &crate::GatewayOpts::default());
        let stack = crate::Stack {
            gateway,
            sto1_a,
            sto1_b: Some(sto1_b),
            osl1,
            quota,
            quota_b: None,
            nats,
        };
        stack
            .wait_for_regions(|r| {
                crate::instances(r, "sto1") == 2 && crate::instances(r, "osl1") == 1
            })
            .await;
        OpenStackStack {
            stack,
            regions,
            config,
        }
    }

    /// The OpenStack region named `name`.
    pub fn region(&self, name: &str) -> &OpenStackRegion {
        self.regions
            .iter()
            .find(|r| r.name() == name)
            .unwrap_or_else(|| panic!("no OpenStack region {name}"))
    }

    /// The directory of the regionds' `regiond.toml`.
    pub fn config_dir(&self) -> &Path {
        self.config.path()
    }
}

impl std::ops::Deref for OpenStackStack {
    type Target = crate::Stack;
    fn deref(&self) -> &crate::Stack {
        &self.stack
    }
}

// ---------------------------------------------------------------------------
// The whole suite on OpenStack

/// Set to `openstack` to make [`Regiond::start`](crate::Regiond::start)
/// (and so [`Stack`](crate::Stack)) run regiond on local OpenStack regions:
/// the scenario tests written for the simulated backends then run unchanged
/// against Keystone and Neutron.
pub const BACKEND_ENV: &str = "NORDLYS_TEST_BACKEND";

/// A region of this name shared by every test of the process (started on
/// first use; its servers exit with the process).
pub fn shared_region(name: &str) -> &'static OpenStackRegion {
    static REGIONS: OnceLock<std::sync::Mutex<Vec<&'static OpenStackRegion>>> = OnceLock::new();
    let regions = REGIONS.get_or_init(Default::default);
    let mut regions = regions.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(region) = regions.iter().find(|r| r.name() == name) {
        return region;
    }
    let region: &'static OpenStackRegion = Box::leak(Box::new(OpenStackRegion::start(name)));
    regions.push(region);
    region
}

/// With [`BACKEND_ENV`]`=openstack`, a regiond on the shared OpenStack
/// region of its name. Each NATS server (so each test's stack) gets its own
/// namespace, so parallel tests sharing a cloud never see each other.
/// Other arguments pass through; a `--backend` is replaced.
pub fn regiond_from_env<S: AsRef<str>>(
    nats: &crate::NatsServer,
    region: &str,
    args: &[S],
    env: &[(&str, &str)],
) -> Option<crate::Regiond> {
    if std::env::var(BACKEND_ENV).ok()? != "openstack" {
        return None;
    }
    assert!(
        available(BACKEND_ENV),
        "{BACKEND_ENV}=openstack needs Keystone and Neutron installed"
    );
    let cloud = shared_region(region);
    let namespace = format!("t{}", nats.port());
    let config = cloud.dir.path().join(format!("regiond-{namespace}"));
    fs::create_dir_all(&config).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
    fs::write(
        config.join("regiond.toml"),
        format!("[openstack]\nnamespace = \"{namespace}\"\n"),
    )
    .unwrap_or_else(|e| panic!("regiond.toml: {e}"));
    let mut rest = args.iter().map(|a| a.as_ref().to_string());
    let mut extra = Vec::new();
    while let Some(arg) = rest.next() {
        if arg == "--backend" {
            rest.next();
        } else if !arg.starts_with("--backend=") {
            extra.push(arg);
        }
    }
    Some(crate::Regiond {
        process: crate::Process::start(regiond_spec(nats, cloud, &config, env).args(extra)),
        region: region.to_string(),
    })
}
