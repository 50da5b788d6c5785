// Opens the NameNode's edit stream (HDFS inotify) as whoever holds the Kerberos ticket, and
// prints the first batch's transaction id; reading it needs an HDFS superuser.
// Run by `devstack check --secure` with Java's single-file launcher.
import java.net.URI;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.client.HdfsAdmin;
import org.apache.hadoop.hdfs.inotify.EventBatch;

public class EditStream {
    public static void main(String[] args) throws Exception {
        Configuration conf = new Configuration();
        HdfsAdmin admin = new HdfsAdmin(URI.create(conf.get("fs.defaultFS")), conf);
        EventBatch batch = admin.getInotifyEventStream(0).poll();
        System.out.println("edit stream readable, first batch txid " + (batch == null ? "none" : batch.getTxid()));
    }
}
