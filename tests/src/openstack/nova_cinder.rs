//! The Nova API and the Cinder API beside a region's Keystone and Neutron
//! (shared/recipes/nova-cinder-quotas-on-loopback.md): each alone as a WSGI
//! app on SQLite, no conductor, scheduler, compute, volume service,
//! placement or message bus. Enough for quota sets: set, read, usage.
//!
//! Debian's `python3-nova`/`python3-cinder` lack the `api-paste.ini` files
//! (they are in `nova-common`/`cinder-common`, whose postinst wants a
//! database server), so CI extracts just those files (`.ci/run`) to
//! [`PASTE_ROOT`]; an installed `nova-common`/`cinder-common` also does.
//!
//! The schemas (nova's db syncs take about 10 s) are made once per package
//! version into a template in the temp dir, which each region copies.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use super::{package_version, run, ADMIN_PASSWORD, DIST, PYTHON};

/// Where `.ci/run` puts `nova-common`'s and `cinder-common`'s files.
const PASTE_ROOT: &str = "/usr/local/share/nordlys";

/// The `{nova,cinder}-common` directory holding `api-paste.ini`.
fn common_dir(service: &str) -> Option<PathBuf> {
    [
        Path::new(PASTE_ROOT).join(format!("{service}-common")),
        Path::new("/usr/share").join(format!("{service}-common")),
    ]
    .into_iter()
    .find(|d| d.join("api-paste.ini").is_file())
}

/// Whether the Nova and Cinder APIs can run here.
pub(super) fn installed() -> bool {
    Path::new(DIST).join("nova").is_dir()
        && Path::new(DIST).join("cinder").is_dir()
        && common_dir("nova").is_some()
        && common_dir("cinder").is_some()
}

pub(super) const HINT: &str = "apt-get install python3-nova python3-cinder, and the api-paste.ini \
     files of nova-common/cinder-common under /usr/local/share/nordlys (see .ci/run)";

const NOVA_MANAGE: &str = "import sys; from nova.cmd.manage import main; \
     sys.argv[0] = 'nova-manage'; sys.exit(main())";
const CINDER_MANAGE: &str = "import sys; from cinder.cmd.manage import main; \
     sys.argv[0] = 'cinder-manage'; sys.exit(main())";

fn authtoken(keystone_port: u16) -> String {
    format!(
        "[keystone_authtoken]\ninterface = public\nwww_authenticate_uri = http://127.0.0.1:{keystone_port}\n\
         auth_url = http://127.0.0.1:{keystone_port}\nauth_type = password\nproject_domain_name = Default\n\
         user_domain_name = Default\nproject_name = admin\nusername = admin\npassword = {ADMIN_PASSWORD}\n"
    )
}

/// `d` is the region's dir: databases in `d/nova`, the log where the
/// region's `log_tail` looks.
fn nova_conf(d: &Path, keystone_port: u16) -> String {
    let d = d.display();
    format!(
        "[DEFAULT]\nhost = lo-nova\nlog_file = {d}/nova.log\nstate_path = {d}/nova\n\
         transport_url = fake://\n[api_database]\nconnection = sqlite:///{d}/nova/nova_api.db\n\
         [database]\nconnection = sqlite:///{d}/nova/nova.db\n{}[oslo_concurrency]\nlock_path = {d}/lock\n",
        authtoken(keystone_port)
    )
}

fn cinder_conf(d: &Path, keystone_port: u16) -> String {
    let filters = common_dir("cinder")
        .map(|c| c.join("resource_filters.json"))
        .filter(|f| f.is_file())
        .map(|f| format!("resource_query_filters_file = {}\n", f.display()))
        .unwrap_or_default();
    let d = d.display();
    format!(
        "[DEFAULT]\nhost = lo-cinder\nlog_file = {d}/cinder.log\nstate_path = {d}/cinder\n\
         api_paste_config = {d}/cinder/api-paste.ini\ntransport_url = fake://\n{filters}\
         [database]\nconnection = sqlite:///{d}/cinder/cinder.db\n{}[oslo_concurrency]\nlock_path = {d}/lock\n\
         [coordination]\nbackend_url = file://{d}/cinder/coord\n",
        authtoken(keystone_port)
    )
}

/// Writes the two services' config files (and api-paste.ini) under `d`.
fn write_configs(d: &Path, keystone_port: u16) {
    for service in ["nova", "cinder"] {
        fs::create_dir_all(d.join(service)).unwrap_or_else(|e| panic!("{service} dir: {e}"));
        let common = common_dir(service).unwrap_or_else(|| panic!("no {service} api-paste.ini"));
        let paste = fs::read_to_string(common.join("api-paste.ini"))
            .unwrap_or_else(|e| panic!("{service} api-paste.ini: {e}"))
            // The healthcheck's off switch, out of /etc.
            .replace(
                &format!("/etc/{service}/healthcheck_disable"),
                &format!("{}/{service}/healthcheck_disable", d.display()),
            );
        fs::write(d.join(service).join("api-paste.ini"), paste)
            .unwrap_or_else(|e| panic!("{service} api-paste.ini: {e}"));
    }
    fs::create_dir_all(d.join("lock")).unwrap_or_else(|e| panic!("lock dir: {e}"));
    fs::write(d.join("nova/nova.conf"), nova_conf(d, keystone_port))
        .unwrap_or_else(|e| panic!("nova.conf: {e}"));
    fs::write(d.join("cinder/cinder.conf"), cinder_conf(d, keystone_port))
        .unwrap_or_else(|e| panic!("cinder.conf: {e}"));
}

/// The databases files a region copies from the template.
const DATABASES: &[&str] = &[
    "nova/nova_api.db",
    "nova/nova.db",
    "nova/nova_cell0.db",
    "cinder/cinder.db",
];

/// Nova's and Cinder's schemas, made once per package version and machine.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let root = std::env::temp_dir();
        let dir = root.join(format!(
            "nordlys-nova-cinder-template-{}-{}",
            package_version("nova"),
            package_version("cinder")
        ));
        if dir.join("ready").is_file() {
            return dir;
        }
        let build = tempfile::Builder::new()
            .prefix("nordlys-nova-cinder-template-build-")
            .tempdir_in(&root)
            .unwrap_or_else(|e| panic!("template dir: {e}"));
        let b = build.path().to_path_buf();
        write_configs(&b, 1);
        let manage = |code: &str, conf: &str, args: &[&str]| {
            run(
                Command::new(PYTHON)
                    .arg("-c")
                    .arg(code)
                    .arg("--config-file")
                    .arg(b.join(conf))
                    .args(args),
                &format!("{conf}: manage {}", args.join(" ")),
            )
        };
        // Cinder's sync (2 s) beside Nova's three (10 s).
        let cinder = {
            let b = b.clone();
            std::thread::spawn(move || {
                run(
                    Command::new(PYTHON)
                        .arg("-c")
                        .arg(CINDER_MANAGE)
                        .arg("--config-file")
                        .arg(b.join("cinder/cinder.conf"))
                        .args(["db", "sync"]),
                    "cinder-manage db sync",
                )
            })
        };
        manage(NOVA_MANAGE, "nova/nova.conf", &["api_db", "sync"]);
        let cell0 = format!("sqlite:///{}/nova/nova_cell0.db", b.display());
        manage(
            NOVA_MANAGE,
            "nova/nova.conf",
            &["cell_v2", "map_cell0", "--database_connection", &cell0],
        );
        manage(NOVA_MANAGE, "nova/nova.conf", &["db", "sync"]);
        if cinder.join().is_err() {
            panic!("cinder-manage db sync failed");
        }
        let files: Vec<String> = DATABASES
            .iter()
            .map(|f| b.join(f).display().to_string())
            .collect();
        run(
            Command::new(PYTHON)
                .arg("-c")
                .arg(
                    "import sqlite3, sys\nfor f in sys.argv[1:]:\n    \
                     sqlite3.connect(f).execute('PRAGMA journal_mode=WAL').fetchall()",
                )
                .args(&files),
            "WAL on the nova and cinder databases",
        );
        super::publish_template(build, dir, "Nova/Cinder")
    })
}

/// Makes the template early (it is slow only the first time on a machine).
pub(super) fn prepare() {
    template();
}

/// Copies the template's databases into region dir `d` and writes its
/// configs for Keystone on `keystone_port`.
pub(super) fn set_up(d: &Path, keystone_port: u16) {
    let template = template();
    write_configs(d, keystone_port);
    for file in DATABASES {
        fs::copy(template.join(file), d.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

/// The watchdog and trace-context notes both servers share (as Keystone's
/// and Neutron's scripts do).
const COMMON: &str = r#"
import faulthandler, os, sys, threading, time
# A crash of the interpreter leaves its stack in the log, not silence.
faulthandler.enable()
d, port = sys.argv[1], int(sys.argv[2])
parent = os.getppid()
# sleep bound now: Nova patches `time` for eventlet on import.
def watchdog(sleep=time.sleep):
    while os.getppid() == parent:
        sleep(0.5)
    os._exit(0)
threading.Thread(target=watchdog, daemon=True).start()
def note_traceparent(server, environ):
    tp = environ.get('HTTP_TRACEPARENT')
    if tp:
        with open(os.path.join(d, server + '.traceparents'), 'a') as f:
            f.write('%s %s %s\n' % (environ.get('REQUEST_METHOD'), environ.get('PATH_INFO'), tp))
"#;

/// Serves Nova's API on the copied databases.
pub(super) const NOVA_SERVE: &str = r#"
import sqlite3
# The template's cell0 mapping names the template's file.
db = sqlite3.connect(os.path.join(d, 'nova', 'nova_api.db'))
db.execute("UPDATE cell_mappings SET database_connection=? WHERE name='cell0'",
           ('sqlite:///' + os.path.join(d, 'nova', 'nova_cell0.db'),))
db.commit()
db.close()
os.environ['OS_NOVA_CONFIG_DIR'] = os.path.join(d, 'nova')
sys.argv = sys.argv[:1]
# Nova first: it patches eventlet in, and a wsgiref imported before keeps
# a blocking select() under which every Keystone token check hangs.
from nova.api.openstack.compute.wsgi import init_application
service, app = 'nova', init_application()
"#;

/// Serves Cinder's API on the copied database.
pub(super) const CINDER_SERVE: &str = r#"
sys.argv = ['cinder-api', '--config-file', os.path.join(d, 'cinder', 'cinder.conf')]
from cinder.wsgi.wsgi import initialize_application
service, app = 'cinder', initialize_application()
"#;

/// Serves `app` as `service`, after the service's own part made them.
/// wsgiref comes in only now: Nova must have patched eventlet in first.
const SERVE: &str = r#"
from wsgiref.simple_server import make_server, WSGIServer, WSGIRequestHandler
from socketserver import ThreadingMixIn
# SQLite fails concurrent writers: one request at a time in the app.
lock = threading.Lock()
def serial(environ, start_response):
    with lock:
        note_traceparent(service, environ)
        return list(app(environ, start_response))
class Threaded(ThreadingMixIn, WSGIServer):
    daemon_threads = True
class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass
server = make_server('127.0.0.1', port, serial, server_class=Threaded, handler_class=Quiet)
print(service + ' ready', flush=True)
server.serve_forever()
"#;

/// A server script: the shared head, then the service's own part.
pub(super) fn script(body: &str) -> String {
    format!("{COMMON}{body}{SERVE}")
}

/// Adds a live instance row to the region's cell0 database, which Nova
/// counts in a project's usage (nothing here can boot a server).
pub(super) fn add_instance(d: &Path, project_id: &str, vcpus: u32, memory_mb: u32) {
    run(
        Command::new(PYTHON)
            .arg("-c")
            .arg(
                "import sqlite3, sys, uuid, datetime\n\
                 db = sqlite3.connect(sys.argv[1])\n\
                 db.execute(\"INSERT INTO instances (uuid, project_id, user_id, vcpus, memory_mb, \
                 deleted, hidden, vm_state, created_at) VALUES (?, ?, 'nordlys-test', ?, ?, 0, 0, \
                 'active', ?)\", (str(uuid.uuid4()), sys.argv[2], int(sys.argv[3]), \
                 int(sys.argv[4]), datetime.datetime.utcnow().isoformat(' ')))\n\
                 db.commit()",
            )
            .arg(d.join("nova/nova_cell0.db"))
            .arg(project_id)
            .arg(vcpus.to_string())
            .arg(memory_mb.to_string()),
        "add an instance row to nova_cell0.db",
    );
}
