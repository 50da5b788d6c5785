// Opens the edit stream (HDFS inotify) through the nameservice of fs.defaultFS at the current
// transaction, creates the file args[0], and prints the transaction id of the batch that
// announces it. Run by `devstack check --ha` with Java's single-file launcher.
import java.net.URI;
import java.util.concurrent.TimeUnit;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.hdfs.client.HdfsAdmin;
import org.apache.hadoop.hdfs.inotify.Event;
import org.apache.hadoop.hdfs.inotify.EventBatch;
import org.apache.hadoop.hdfs.DFSInotifyEventInputStream;

public class EditStream {
    public static void main(String[] args) throws Exception {
        Configuration conf = new Configuration();
        URI uri = URI.create(conf.get("fs.defaultFS"));
        DFSInotifyEventInputStream stream = new HdfsAdmin(uri, conf).getInotifyEventStream();
        FileSystem fs = FileSystem.get(uri, conf);
        fs.create(new Path(args[0]), true).close();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (System.nanoTime() < deadline) {
            EventBatch batch = stream.poll(1, TimeUnit.SECONDS);
            if (batch == null) continue;
            for (Event e : batch.getEvents()) {
                if (e instanceof Event.CreateEvent && ((Event.CreateEvent) e).getPath().equals(args[0])) {
                    System.out.println("create of " + args[0] + " in the edit stream at txid " + batch.getTxid());
                    fs.delete(new Path(args[0]), false);
                    return;
                }
            }
        }
        System.err.println("no create event for " + args[0] + " within 20s");
        System.exit(1);
    }
}
